package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/go-logr/logr"
)

// looseKeyFileMsg is logged when the etcd client key file is not private.
const looseKeyFileMsg = "the etcd client key file is not private: whoever can read it can act as this agent in etcd, whoever can write it can replace it; chmod 600 it"

// warnLooseKeyFile logs looseKeyFileMsg once, at start, when path (the
// --etcd-keyfile) can be read by every local user or changed by users other
// than its owner. A key readable by its group only is not reported: a group
// of the certificate's users is a common set-up. The file is not refused:
// it may be so on purpose, and the agent is needed for the network.
func warnLooseKeyFile(log logr.Logger, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		// Loading the key reports it.
		return
	}
	if perm := fi.Mode().Perm(); perm&0o026 != 0 {
		log.Info(looseKeyFileMsg, "file", path, "mode", fmt.Sprintf("%#o", perm))
	}
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
