package subnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/subnet/subnetenv"
)

// HostIDFile is the name of the host identity file in the state directory.
const HostIDFile = "host-id"

// LoadOrCreateHostID returns the host identity kept in stateDir, creating a
// random one on first use. It survives restarts and reboots as long as the
// state directory does; a lost state directory gives the host a new identity,
// and its live lease, naming the old one, is then not reused: it cannot be told
// from another host's behind the same NAT address.
func LoadOrCreateHostID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, HostIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id, err := subnetenv.ParseHostID(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w (delete the file to get a new identity)", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read host id: %w", err)
	}
	return NewHostID(stateDir)
}

// NewHostID gives this host a new random identity, kept in stateDir in
// place of the one there, and returns it: for a host whose identity another
// host has too (ErrHostIDShared).
func NewHostID(stateDir string) (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := atomicfile.Write(filepath.Join(stateDir, HostIDFile), []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write host id: %w", err)
	}
	return id, nil
}
