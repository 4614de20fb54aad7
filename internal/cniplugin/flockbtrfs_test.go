package cniplugin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// btrfsChildEnv, when set, names the btrfs image that
// TestFlockHoldersOnBtrfs's child, run in a mount namespace of its own,
// mounts.
const btrfsChildEnv = "AGENTD_CNI_TEST_BTRFS_IMAGE"

// TestFlockHoldersOnBtrfs: on btrfs, the holder of dataDir's lock is named.
// /proc/locks names a file by its superblock's device, and btrfs's stat by
// its subvolume's (the top one's too), so flockHolders, which looked for
// stat's device only, found no line there and the error said "its holder
// is not listed in /proc/locks" (Fedora's and openSUSE's roots are btrfs).
// The image is mounted in a mount namespace of the test's own (unshare),
// which goes with the child.
func TestFlockHoldersOnBtrfs(t *testing.T) {
	if img := os.Getenv(btrfsChildEnv); img != "" {
		btrfsHolderChild(t, img)
		return
	}
	var why string
	if os.Geteuid() != 0 {
		why = fmt.Sprintf("needs root to mount a btrfs image (euid %d)", os.Geteuid())
	}
	for _, cmd := range []string{"mkfs.btrfs", "unshare", "mount"} {
		if _, err := exec.LookPath(cmd); err != nil && why == "" {
			why = "needs " + cmd + " (apt-get install btrfs-progs util-linux mount)"
		}
	}
	unmet(t, why)
	img := filepath.Join(t.TempDir(), "btrfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128<<20); err != nil { // sparse
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v\n%s", err, out)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestFlockHoldersOnBtrfs$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), btrfsChildEnv+"="+img)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFlockHoldersOnBtrfs") {
		t.Fatalf("the child in its mount namespace: %v\n%s", err, out)
	}
	t.Logf("the child:\n%s", out)
}

// btrfsHolderChild mounts img, takes the lock of a directory in it and
// checks that flockHolders names this process.
func btrfsHolderChild(t *testing.T, img string) {
	dir := filepath.Join(filepath.Dir(img), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	dataDir := filepath.Join(dir, "flannel")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	locks, _ := os.ReadFile("/proc/locks")
	var ours []string
	for line := range strings.Lines(string(locks)) {
		if strings.Contains(line, " "+strconv.Itoa(os.Getpid())+" ") {
			ours = append(ours, strings.TrimSpace(line))
		}
	}
	t.Logf("stat's device %d:%d, inode %d; /proc/locks: %q", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino, ours)
	if got := flockHolders(d); !slices.Contains(got, os.Getpid()) {
		t.Errorf("flockHolders of a directory on btrfs = %v, want this process (%d): the error would say %q",
			got, os.Getpid(), describeHolders(got))
	}
}
