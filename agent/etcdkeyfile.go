package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/agentd/agentd/internal/atomicfile"
)

// looseKeyFileMsg is logged when the etcd client key file is not private.
const looseKeyFileMsg = "the etcd client key file is not private: whoever can read it can act as this agent in etcd, whoever can write it can replace it; chmod 600 it"

// looseKeyFile says whether path (the --etcd-keyfile) can be read by every
// local user or changed by users other than its owner, and its mode: if so,
// looseKeyFileMsg is logged once, at start. A key readable by its group
// only is not reported: a group of the certificate's users is a common
// set-up. The file is not refused: it may be so on purpose, and the agent
// is needed for the network.
func looseKeyFile(path string) (mode string, loose bool) {
	fi, err := os.Stat(path)
	if err != nil {
		// Loading the key reports it.
		return "", false
	}
	perm := fi.Mode().Perm()
	return fmt.Sprintf("%#o", perm), perm&0o026 != 0
}

// replaceableTLSFileMsg is logged when someone other than root could change
// an etcd TLS file.
const replaceableTLSFileMsg = "an etcd TLS file can be changed by someone other than root: " +
	"whoever changes the CA file chooses which etcd agentd trusts, and so every route and subnet of this host; " +
	"whoever changes the certificate and key chooses whom agentd acts as in etcd; " +
	"make the file and the directories above it root's and writable by root only"

// replaceableBy is the reason, with how to mend it, to log
// replaceableTLSFileMsg once, at start, for the file at path, or "": someone
// other than root (or this process's user) could change it: it is another
// user's, or its group or others may write to it (modeToo: the key's mode
// is looseKeyFile's), or another user could replace it through a directory
// on its path, symbolic links followed, as subnet.env's readers and the
// state dir are checked (atomicfile.CheckPath). The file is not refused, as
// a loose key is not: certificates owned by an etcd or kube user are a
// common set-up, and refusing them would take the network away from hosts
// where it works.
func replaceableBy(path string, modeToo bool) string {
	if err := atomicfile.CheckPath(path); errors.Is(err, atomicfile.ErrUntrusted) {
		return err.Error()
	}
	fi, err := os.Stat(path)
	if err != nil {
		// Loading the file reports it (rootDenied).
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Sprintf("%s is owned by uid %d: chown root: %s", path, st.Uid, path)
	}
	if perm := fi.Mode().Perm(); modeToo && perm&0o022 != 0 {
		return fmt.Sprintf("%s is writable by its group or others (mode %#o): chmod go-w %s", path, perm, path)
	}
	return ""
}

// rootDenied explains err, a file's read refused to root: agentd runs
// without CAP_DAC_OVERRIDE under agentd.service and the DaemonSet, so root
// reads only what the file's mode lets its owner, group or others read, and
// "permission denied" would puzzle an operator who knows agentd runs as
// root. Other errors are returned as they are.
func rootDenied(err error) error {
	var pe *fs.PathError
	if os.Geteuid() != 0 || !errors.Is(err, fs.ErrPermission) || !errors.As(err, &pe) {
		return err
	}
	fi, serr := os.Stat(pe.Path)
	if serr != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return err
	}
	return fmt.Errorf("%w: agentd runs as root without CAP_DAC_OVERRIDE (agentd.service and the DaemonSet keep only CAP_NET_ADMIN and CAP_NET_RAW), "+
		"so it reads a file only as its mode allows; this one is uid %d's, gid %d's, mode %#o: make it root's (chown root %s)",
		err, st.Uid, st.Gid, fi.Mode().Perm(), pe.Path)
}
