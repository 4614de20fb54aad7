package subnetenv

import (
	"fmt"
	"strings"
)

// ParseHostID validates a host identity, as kept in the state directory's
// host-id file (subnet.LoadOrCreateHostID) and in subnet.env's AGENTD_HOST_ID:
// 32 lowercase hex digits, optionally followed by a newline.
func ParseHostID(b []byte) (string, error) {
	s := strings.TrimSuffix(string(b), "\n")
	if len(s) != 32 {
		return "", fmt.Errorf("host id must be 32 hex digits, got %d characters", len(s))
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("host id %q has a character that is not a lowercase hex digit", s)
		}
	}
	return s, nil
}
