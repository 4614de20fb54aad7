package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const modulePath = "github.com/agentd/agentd"

// defaultBinDir is where, under the module's directory, the harness builds
// when Options.BinDir is empty: beside make build's bin/, not in it, so that
// make test, which runs make build first, leaves the static, version-stamped
// programs there as make built them (plain go builds would replace them).
const defaultBinDir = "bin/test"

// built remembers the binaries this process has built (output path and
// flags), so a test binary that makes many clusters builds each program once:
// the sources do not change while tests run.
var built struct {
	sync.Mutex
	done map[string]bool
}

// Binary returns the path of ./run/<name> built into the cluster's BinDir
// (see binary), for tests that run the project's other commands.
func (c *Cluster) Binary(ctx context.Context, name string) (string, error) {
	return c.binary(ctx, name, "")
}

// binary returns explicit if set, else BinDir/<name> freshly built from
// ./run/<name> (a no-op link when it is up to date: go build compares build
// IDs). Builds into one BinDir are serialised across processes with a lock
// file, so parallel test packages do not overwrite each other's binaries.
func (c *Cluster) binary(ctx context.Context, name, explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%s binary: %w", name, err)
		}
		return explicit, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("build %s: %w (or set Options.%s)", name, err, map[string]string{"agentd": "AgentdBin", "testetcd": "EtcdBin"}[name])
	}
	dir := c.opts.BinDir
	if dir == "" {
		dir = filepath.Join(root, defaultBinDir)
	}
	out := filepath.Join(dir, name)
	key := out + " " + strings.Join(c.opts.BuildFlags, " ")
	built.Lock()
	defer built.Unlock()
	if built.done[key] {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	if err := goBuild(ctx, root, dir, out, "./run/"+name, c.opts.BuildFlags); err != nil {
		return "", err
	}
	c.logf("cluster %s: go build -o %s: %v", c.prefix, out, time.Since(start).Round(time.Millisecond))
	if built.done == nil {
		built.done = map[string]bool{}
	}
	built.done[key] = true
	return out, nil
}

func goBuild(ctx context.Context, root, dir, out, pkg string, flags []string) error {
	lock, err := os.OpenFile(filepath.Join(dir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)

	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, goBin, append(args, pkg)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build -o %s %s: %w: %s", out, pkg, err, tail(stderr.Bytes(), 3000))
	}
	return nil
}

// moduleRoot finds the agentd module's directory above the working
// directory (go test runs in the package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the " + modulePath + " module")
		}
		dir = parent
	}
}
