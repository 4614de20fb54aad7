package agent

import (
	"fmt"
	"os"

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
