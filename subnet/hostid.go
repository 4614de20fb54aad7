package subnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentd/agentd/internal/atomicfile"
)

// HostIDFile is the name of the host identity file in the state directory.
const HostIDFile = "host-id"

// ParseHostID validates the content of a host identity file: 32 lowercase hex
// digits, optionally followed by a newline.
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

// LoadOrCreateHostID returns the host identity kept in stateDir, creating a
// random one on first use. It survives restarts and reboots as long as the
// state directory does; a lost state directory gives the host a new identity,
// and its live lease, naming the old one, is then not reused: it cannot be told
// from another host's behind the same NAT address.
func LoadOrCreateHostID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, HostIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id, err := ParseHostID(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w (delete the file to get a new identity)", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read host id: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write host id: %w", err)
	}
	return id, nil
}
