package cniplugin

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/coreos/go-iptables/iptables"
)

// Versions are the CNI spec versions the plugin accepts, 1.1.0 included: a
// runtime with libcni 1.2 or later (containerd 2, CRI-O 1.30) runs a network
// whose "cniVersions" list 1.1.0 in 1.1.0, DEL of pods added before the
// upgrade included. Delegates get at most 1.0.0 (see delegateVersion).
var Versions = version.PluginSupports("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// maxDelegateVersion is the newest CNI version a delegate gets for ADD, DEL
// and CHECK. 1.1.0 adds the GC and STATUS commands and optional result
// fields, nothing those three need, and the standard plugins stop at 1.0.0
// before containernetworking-plugins 1.5 (Debian 12 has 1.1.1).
const maxDelegateVersion = "1.0.0"

// delegateVersion is the cniVersion a delegate gets for ADD, DEL and CHECK
// in a network of version v.
func delegateVersion(v string) string {
	if newer, err := version.GreaterThan(v, maxDelegateVersion); err == nil && newer {
		return maxDelegateVersion
	}
	return v
}

// Plugin runs the CNI commands. The zero value is ready: delegates are
// found in CNI_PATH and results go to stdout.
type Plugin struct {
	// Exec runs delegate plugins; nil means the real one.
	Exec invoke.Exec
	// Stdout receives ADD's result; nil means os.Stdout.
	Stdout io.Writer
	// Stderr receives what the runtime should log of a command that
	// succeeded; nil means os.Stderr.
	Stderr io.Writer

	// now and sleep are the clock of ADD's waits for subnet.env and the
	// xtables lock; nil means the real one.
	now   func() time.Time
	sleep func(time.Duration)
	// crash, set by tests, is asked after each step of ADD's saving (see
	// save); true ends ADD there with errCrashed, leaving dataDir as a
	// crash at that point would.
	crash func(step string) bool
	// link makes the legacy name (see save); nil means os.Link. Tests
	// set it to play a filesystem without hard links.
	link func(oldname, newname string) error
	// masq finds and removes the delegates' masquerade chains; nil means
	// iptables (see iptablesMasq).
	masq masqChains
}

// errCrashed is ADD's error when the crash test hook ended it.
var errCrashed = errors.New("crashed (test hook)")

// subnetPoll is how often ADD looks again for a missing subnet.env.
const subnetPoll = 200 * time.Millisecond

// Funcs is the plugin's command table for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// Add reads subnet.env, saves the delegate configuration for the attachment
// and runs the delegate's ADD, printing its result in the network's version.
// A missing subnet.env is waited for (see waitSubnetEnv), then is "try again
// later" (agentd has not leased a subnet yet); an unreadable one an I/O
// failure naming the file; a malformed or cut-short one, or one without
// FLANNEL_IPMASQ, an invalid configuration naming the file and key. No
// delegate runs in any of these cases, so no interface gets a wrong address
// or MTU. Nor does it for an attachment whose file name would be too long
// (see fits), which is refused before anything else. Before the delegate
// runs, the masquerade chains earlier DELs could not remove are removed (see
// retryMasq): if the container's own cannot be, or another command keeps
// them locked past masqLockWait while one of the container's is recorded,
// ADD is "try again later"; so it is when another program keeps the
// xtables lock that the delegate would wait for without a limit (see
// waitXtables), or another process keeps dataDir's lock past
// dataDirLockWait (see lockDataDir). None of these saves anything.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	n, at, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := at.fits(n); err != nil {
		return err
	}
	// Before the retries, which may keep masqRetryDir locked until the
	// save: held through this wait (subnetFileWait, 30 s), the lock
	// failed every other ADD of a container with a record after
	// masqLockWait, at a node's boot, while subnet.env was still missing.
	env, err := p.waitSubnetEnv(n)
	if err != nil {
		return err
	}
	d, b, err := delegateConf(n, env)
	if err != nil {
		return err
	}
	// Before the retries too: their iptables commands wait xtablesWait
	// (1 s) for the xtables lock, so while another program held it a
	// moment the container's own record failed ADD, without the wait
	// for the delegate's sake (below) ever being reached; and a retry
	// lock kept through both waits failed other ADDs of recorded
	// containers after masqLockWait.
	if err := p.waitXtables(d, nil); err != nil {
		return err
	}
	lock, ownErr, err := p.retryMasq(n.DataDir, n.Name+":"+at.containerID+":"+at.ifName)
	defer lock.unlock()
	if ownErr != nil {
		return types.NewError(types.ErrTryAgainLater, ownErr.Error(), "")
	}
	if err != nil {
		fmt.Fprintf(p.stderr(), "agentd-cni: ADD of container %s interface %s in network %s: %v\n", args.ContainerID, args.IfName, n.Name, err)
	}
	// Again, next to the delegate: the retries' own iptables commands
	// take the lock, and a program queued behind them may hold it now.
	// The retry lock is let go of while this waits, as it is for the
	// first wait: kept, it failed every other ADD of a recorded
	// container after masqLockWait while this one waited up to
	// delegateXtablesWait. It is taken again before the save, so a
	// retry in between has ended before the delegate runs (see
	// retryLock.retake).
	if err := p.waitXtables(d, lock.release); err != nil {
		return err
	}
	if err := lock.retake(); err != nil {
		return err
	}
	// Saved first: if the delegate fails half-way, the runtime's DEL must
	// undo exactly this.
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	if err := p.save(at, b); err != nil {
		return err
	}
	lock.unlock()
	res, err := invoke.DelegateAdd(context.Background(), d["type"].(string), b, p.Exec)
	if err != nil {
		return delegateError(d, "ADD", err)
	}
	if n.CNIVersion != "" {
		if res, err = res.GetAsVersion(n.CNIVersion); err != nil {
			return types.NewError(types.ErrIncompatibleCNIVersion, err.Error(), "")
		}
	}
	return res.PrintTo(p.stdout())
}

// Del runs the delegate's DEL with the configuration ADD saved for the
// attachment (see readSaved), then forgets it. Without a usable saved
// configuration (ADD never ran here, an earlier DEL finished, or the file is
// damaged) it rebuilds one from subnet.env, or, if that is not readable
// either, with releaseOnly's range, so addresses are still released (a
// runtime retries a failed DEL for as long as the pod's sandbox exists, and
// the real delegates' DEL succeeds when there is nothing to release).
// First it retries the removal of masquerade chains that earlier DELs
// could not remove (see retryMasq); a failure there, as one of the
// container's own chain (see release), goes to stderr, and DEL succeeds.
// A key of delegate or ipam given in two spellings, which ADD refuses,
// does not fail it (loadConfForDel). When another process keeps dataDir's
// lock past dataDirLockWait, DEL fails with "try again later" after the
// delegate's DEL, with the saved files still there for the runtime's
// retry (see lockDataDir). Last, what is saved for the same container and
// interface under a former name of the network is released too (see
// releaseRenamed).
func (p *Plugin) Del(args *skel.CmdArgs) error {
	n, at, err := loadConfWith(args, loadConfForDel)
	if err != nil {
		return err
	}
	if _, _, err := p.retryMasq(n.DataDir, ""); err != nil {
		fmt.Fprintf(p.stderr(), "agentd-cni: DEL of container %s interface %s in network %s: %v\n", args.ContainerID, args.IfName, n.Name, err)
	}
	err = p.release(n, at, args.Netns, func(typ string, conf []byte) error {
		return invoke.DelegateDel(context.Background(), typ, conf, p.Exec)
	})
	var me *masqError
	if errors.As(err, &me) {
		// The pod is gone and its address free. Failing DEL would not
		// mend this, and while the cause lasts would fail every retry:
		// the runtime's log gets it, and later commands retry (see
		// release).
		fmt.Fprintf(p.stderr(), "agentd-cni: DEL of container %s interface %s in network %s: %v\n", args.ContainerID, args.IfName, n.Name, me.err)
		err = nil
	}
	if err != nil {
		return err
	}
	return p.releaseRenamed(n, at)
}

// releaseRenamed releases, after DEL of the attachment at, what is still
// saved for the same container ID and interface under former names of the
// network (see renamedFiles): a container has one interface of a name,
// which this DEL deletes (bridge's, or any delegate's that makes it), so
// those attachments are gone too. A pod added under the
// network's former name and added again under the new one (podman
// restarting a container, a runtime retrying a sandbox's network after
// the conflist changed) has a file under each name; DEL under the new name
// took the new name's alone, and the former name's file, its legacy second
// name, its address (in the former name's host-local store) and its
// masquerade chain stayed for good, since no DEL under that name comes
// again. Only files whose configuration is this network's but for the
// name (see formerConf) are taken, as GC takes a former name's: a
// delegate that makes no interface (host-local alone) lets another network
// sharing dataDir give a container's attachment the same interface name,
// and that network's configuration differs in some key. So none is taken
// while subnet.env cannot be read, nor one of a subnet the host had
// before. Each gets the delegate's DEL with its configuration and no
// network namespace, as GC gives it: bridge then releases the addresses
// alone, and the chain is removed after it (see dropMasqChain), where with
// the namespace, its interface already deleted, bridge would have left
// the chain. A failure fails DEL, for the runtime to retry, except one of
// the masquerade chain's removal, logged and recorded as DEL's own.
func (p *Plugin) releaseRenamed(n *NetConf, at attachment) error {
	files, _ := renamedFiles(n, at)
	if len(files) == 0 {
		return nil
	}
	env, err := subnetenv.ReadOwnedComplete(n.SubnetFile)
	if err != nil {
		return nil
	}
	var errs []error
	for _, f := range files {
		var d map[string]any
		if json.Unmarshal(f.b, &d) != nil || !formerConf(n, env, d) {
			continue
		}
		renamed := *n
		renamed.Name = f.network
		rat, err := attachmentOf(&renamed, at.containerID, at.ifName)
		if err != nil {
			continue
		}
		err = p.release(&renamed, rat, "", func(typ string, conf []byte) error {
			return p.runDelegate(typ, conf, &invoke.Args{Command: "DEL", ContainerID: at.containerID, IfName: at.ifName, Path: os.Getenv("CNI_PATH")})
		})
		var me *masqError
		if errors.As(err, &me) {
			fmt.Fprintf(p.stderr(), "agentd-cni: DEL of container %s interface %s in network %s: %s, saved under network name %s: %v\n", at.containerID, at.ifName, n.Name, f.path, f.network, me.err)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s, saved for this container and interface under network name %s: %w", f.path, f.network, err))
		}
	}
	return joinErrors("DEL", errs)
}

// masqError is release's error when the delegate's DEL succeeded but the
// removal of the container's masquerade chain after it failed (see
// dropMasqChain), and the chain is recorded for later commands to remove
// (see masqRetryDir).
type masqError struct{ err error }

func (e *masqError) Error() string { return e.err.Error() }
func (e *masqError) Unwrap() error { return e.err }

// dropMasqChain removes the attachment's masquerading (see masqChains)
// after the delegate's DEL of the attachment at, when the delegate may have
// left it: it ran without the pod's network namespace (netns empty: GC's
// DEL, and containerd's once the sandbox's namespace is closed; or gone),
// or it was told ipMasq false because the look-up failed or found the
// chain in one family alone (told, see release). No later DEL of the
// delegate's will remove it. It is
// network's, the name the delegate's configuration gave (see
// savedNetwork). The iptables chain, the container's, stays while it may
// serve another attachment of the container in that network (see
// chainInUse; saved is the file DEL released). A failed removal is retried
// by later commands (see masqRetryDir).
func (p *Plugin) dropMasqChain(n *NetConf, network string, at attachment, saved, netns string, told bool) error {
	if netns != "" && !told && exists(netns) {
		return nil
	}
	inUse := chainInUse(n.DataDir, network, at.containerID, saved)
	return p.masqChains().Remove(network, at.containerID, at.ifName, !inUse)
}

// exists says whether the pod's network namespace netns is there.
func exists(netns string) bool {
	_, err := os.Stat(netns)
	return err == nil
}

// chainInUse says whether an attachment of network's container containerID
// other than the one saved in file except is saved in dataDir: the
// container's iptables masquerade chain may serve it. The container's
// per-container file counts too (see attachment's legacy) when it names
// network and is not except nor a second name of it: flannel's plugin,
// and agentd-cni before the per-attachment layout, saved the container's
// first attachment there alone. Without it, the DEL of a second interface
// added after the upgrade removed the chain under the first one, whose
// traffic then left the host unmasqueraded. One that does not decode as
// a delegate configuration (see decodeSaved) serves no attachment, and
// does not count. One that cannot be read (EIO) counts, as an attachment
// file counts unread: what it serves is not known, and a chain removed
// under a running pod is not put back, where one kept goes with that
// file's DEL (which fails, for the runtime to retry, while the file cannot
// be read). Before, the failure was chainInUse's error, which ended a
// retried removal (see retryMasq) before its failed retries were
// counted: never given up, it failed every later command's retries.
func chainInUse(dataDir, network, containerID, except string) bool {
	// The parts of the name hold no pattern characters (see attachmentOf
	// and savedNetwork), so Glob fails on none.
	saved, err := filepath.Glob(filepath.Join(dataDir, network+":"+containerID+":*"))
	if err != nil || slices.ContainsFunc(saved, func(f string) bool { return f != except }) {
		return true
	}
	legacy := filepath.Join(dataDir, containerID)
	fi, err := os.Lstat(legacy)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) || legacy == except || sameFile(legacy, except) {
		return false
	}
	if err != nil {
		return true
	}
	b, err := os.ReadFile(legacy)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	_, err = decodeSaved(legacy, b)
	name, _ := savedName(b)
	return err == nil && name == network
}

// savedNetwork is the network name in the delegate configuration b (see
// savedName), which names bridge's masquerade chain: n's, except in a file
// saved under a former name of the network (see renamedSaved).
func savedNetwork(n *NetConf, b []byte) string {
	if name, ok := savedName(b); ok && utils.ValidateNetworkName(name) == nil {
		return name
	}
	return n.Name
}

// savedName is the network name in the delegate configuration b as the
// plugins read it: flannel's plugin, bridge (which names the masquerade
// chain after it) and host-local (its store) decode it with encoding/json,
// which matches the key "name" whatever its case, the last spelling in b
// winning. ok is false when b gives no name as a string.
func savedName(b []byte) (name string, ok bool) {
	var named struct {
		Name *string `json:"name"`
	}
	if json.Unmarshal(b, &named) != nil || named.Name == nil {
		return "", false
	}
	return *named.Name, true
}

// release is DEL of the attachment at, the delegate run by del, netns the
// pod's network namespace as the runtime gave it. The container's
// masquerade chain goes next when the delegate may have left it (see
// dropMasqChain); when that removal fails, the chain is recorded for
// later commands to remove (see masqRetryDir) before the saved files go,
// and the error is a *masqError. If the record cannot be written either,
// the attachment stays saved and DEL fails, for the runtime to retry. With
// the pod's namespace there, the delegate runs only once the xtables lock
// is free, if it would wait for it (see waitXtables).
func (p *Plugin) release(n *NetConf, at attachment, netns string, del func(typ string, conf []byte) error) error {
	saved, b, forget, left, err := readSaved(n, at)
	for _, l := range left {
		fmt.Fprintf(p.stderr(), "agentd-cni: DEL of container %s interface %s in network %s: %s\n", at.containerID, at.ifName, n.Name, l.describe(at))
	}
	if errors.Is(err, syscall.ENAMETOOLONG) {
		// No file can have the attachment's name, and no legacy file
		// nor a former name's file serves it: its ADD saved nothing
		// and so ran no delegate (see fits). A configuration rebuilt
		// from subnet.env would undo nothing, and its DEL may fail the
		// same way (host-local names a directory after the network).
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	var d map[string]any
	if err == nil {
		d, err = decodeSaved(saved, b)
	}
	lookupFailed, rebuilt := false, err != nil
	if rebuilt {
		// Not subnetenv.ReadOwnedComplete: a file without its FLANNEL_IPMASQ
		// line still names the range to release from. Without a usable
		// file (agentd stopped, lost its subnet, not leased since a
		// reboot) the delegate still gets DEL, with releaseOnly's range:
		// bridge and host-local release by container ID and interface
		// name, and skipping the delegate would leave the address taken
		// for good.
		env, envErr := subnetenv.ReadOwned(n.SubnetFile)
		if envErr != nil {
			env = releaseOnly
		}
		// Which ipMasq ADD gave the delegate is not known, and today's
		// FLANNEL_IPMASQ need not be ADD's: the masquerade chain it
		// made, if any, says (see masqChains). Where that look-up
		// fails, the delegate gets ipMasq false, whose DEL needs no
		// iptables, and the chain is removed after it.
		has, hasErr := p.masqChains().Has(n.Name, at.containerID, at.ifName)
		env.IPMasq, lookupFailed = !has, hasErr != nil
		if d, b, err = delegateConf(n, env); err != nil {
			return err
		}
	}
	dropAfter := lookupFailed
	if netns != "" && exists(netns) {
		if d["ipMasq"] == true && !rebuilt {
			// A saved ipMasq outlives the chain (the nat table reloaded
			// by a firewall script, a bridge ADD that failed before
			// making it); Debian's bridge 1.1.1 with iptables-nft then
			// fails its DEL on the missing chain, after it has deleted
			// the interface. Told ipMasq false, it removes nothing
			// that is not there. So it fails for a dual-stack pod whose
			// chain is gone in one family alone (iptables-restore of
			// the IPv4 rules): told ipMasq false, it leaves the other's,
			// removed after it (dropMasqChain). A failed look-up keeps
			// what was saved.
			sn := savedNetwork(n, b)
			has, err := p.masqChains().Has(sn, at.containerID, at.ifName)
			partial := false
			if err == nil && has {
				partial, err = p.masqChains().Partial(sn, at.containerID, savedFamilies(d))
			}
			if err == nil && (!has || partial) {
				d["ipMasq"], dropAfter = false, partial
				if b, err = json.Marshal(d); err != nil {
					return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
				}
			}
		}
		// Without the namespace (none given, or gone: the sandboxes of
		// before a reboot) bridge only releases addresses, and the
		// chain's removal after it waits xtablesWait at most.
		if err := p.waitXtables(d, nil); err != nil {
			return err
		}
	}
	if err := del(d["type"].(string), b); err != nil {
		return delegateError(d, "DEL", err)
	}
	network := savedNetwork(n, b)
	if err := p.dropMasqChain(n, network, at, saved, netns, dropAfter); err != nil {
		now, _ := p.clock()
		if rerr := recordMasqRetry(n.DataDir, network, at.containerID, at.ifName, now()); rerr != nil {
			return types.NewError(types.ErrIOFailure, fmt.Sprintf("%v; nor could the chain be recorded for a later removal: %v", err, rerr), "")
		}
		if rerr := p.removeSaved(at, forget); rerr != nil {
			return rerr
		}
		return &masqError{err}
	}
	return p.removeSaved(at, forget)
}

// masqRetryDir is the subdirectory of dataDir that lists the masquerading
// still to be removed (see masqChains), one file per attachment named
// <network>:<container ID>:<interface>, holding a masqRecord, written by a
// DEL whose removal of it failed (see release). Each later ADD, DEL and
// GC, of any network sharing the dataDir, tries again (see retryMasq): no
// GC comes from containerd 1.7, nor for a network below CNI 1.1.0, and
// after a DEL with nothing saved GC would find no attachment to release.
// An attachment is recorded only after its DEL, and the container's
// iptables chain is removed only while no other attachment of it in the
// network is saved (see chainInUse), so a later removal cannot take a
// running pod's, except after an ADD of that attachment again, which
// retryMasq sees to. The name starts with "_", as no container ID or
// network name can, so it is no attachment's file nor a legacy one.
const masqRetryDir = "_masq-retry"

// A record in masqRetryDir whose removal has failed for masqRetryFor since
// its DEL, and in masqRetryTries retries at least, is given up (see
// retryMasq): the cause is not the xtables lock, held for seconds at a
// time, but one that lasts (another rule jumping to the chain, iptables
// refused), which retrying does not mend. Kept, such records grew by one
// for each pod deleted while it lasted, and every later ADD and DEL logged
// one of them failing again. The count of retries keeps a record of a
// quiet node, retried by few commands, from being given up on one failure
// in a busy second of the lock.
const (
	masqRetryFor   = 24 * time.Hour
	masqRetryTries = 5
)

// masqLockWait is how long an ADD waits for another command that holds
// masqRetryDir's lock (see retryMasq) before it fails with "try again
// later": as long as it waits for the xtables lock. A CNI ADD must return:
// kubelet and containerd time out on one that does not, and the pod stays
// in ContainerCreating.
const masqLockWait = delegateXtablesWait

// masqLockPoll is how often an ADD tries that lock.
const masqLockPoll = 20 * time.Millisecond

// masqRetryBudget is how long a command goes on retrying the records of
// other attachments in masqRetryDir, after its own (see retryMasq): it
// starts no other removal past it, and leaves the rest to later commands,
// which find them first in their order (see recordsByAge). A removal runs
// iptables, ip6tables and nft several times, 10-25 ms in all with legacy
// iptables and a small nat table. After a node-wide failure (iptables
// refused for an hour while pods came and went) thousands of records
// wait: the first ADD or DEL once the cause had gone retried them all,
// for a minute or more, past the runtime's timeouts (kubelet's
// runtime-request-timeout is 2 minutes), failing the pod just as the node
// recovered, and kept the lock that an ADD of a recorded container waits
// masqLockWait for. Each command now removes 40 to 100, many times the
// one record each failed DEL made.
const masqRetryBudget = time.Second

// errMasqGivenUp is in retryMasq's error for a record given up.
var errMasqGivenUp = errors.New("given up")

// masqRecord is what a file in masqRetryDir holds (JSON). One that does
// not decode, or has no time (agentd-cni before 2026-12-06 wrote empty
// files), counts from its next failed retry.
type masqRecord struct {
	// Since is when the DEL whose removal failed recorded it.
	Since time.Time `json:"since"`
	// FailedRetries is how many retries of it have failed since.
	FailedRetries int `json:"failedRetries"`
}

// recordMasqRetry records the masquerading of network's attachment
// containerID, ifName in dataDir's masqRetryDir, at now. A record already
// there (a DEL run again) keeps its time.
func recordMasqRetry(dataDir, network, containerID, ifName string, now time.Time) error {
	dir := filepath.Join(dataDir, masqRetryDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, network+":"+containerID+":"+ifName)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := writeMasqRecord(path, masqRecord{Since: now}); err != nil {
		// A full disk may still take an empty file, which counts from
		// its first failed retry: the record matters more than its time.
		return atomicfile.Write(path, nil, 0o600)
	}
	return nil
}

func writeMasqRecord(path string, r masqRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// readMasqRecord is the record at path, or one of now if it holds none.
func readMasqRecord(path string, now time.Time) masqRecord {
	var r masqRecord
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &r) != nil || r.Since.IsZero() {
		return masqRecord{Since: now}
	}
	return r
}

// retryMasq removes the masquerading recorded in dataDir's masqRetryDir
// and forgets it: first own's (<network>:<container ID>:<interface> of the
// attachment an ADD is for, "" for none), then the others', the least
// recently tried first (see recordsByAge), until one fails, since while the
// cause lasts (the xtables lock held) each would wait and fail alike, or
// until masqRetryBudget has passed, leaving the rest to later commands; the
// one that failed goes last, so one that fails for good (a chain another
// rule still jumps to) does not keep the others waiting, and after
// masqRetryFor and masqRetryTries it is given up: forgotten, the error
// saying so and how to remove it by hand (see masqByHand). own's failure
// is ownErr; the others', and own's give-up, are err. An ADD fails on
// ownErr: its delegate would make the container's chain again under the
// same name, for a later retry to remove under the running pod. For the
// same reason the directory is locked (flock) while retryMasq runs, so
// that one that listed a record cannot remove the chain after the record's
// ADD has removed it and made it anew. Only an ADD of a container with a
// record in the network waits for the lock, masqLockWait at most (then
// ownErr says so), and keeps it (lock) until it has saved; any other
// command finding the lock taken leaves the retries to the command holding
// it. lock is never nil, and holds nothing for those other commands.
func (p *Plugin) retryMasq(dataDir, own string) (lock *retryLock, ownErr, err error) {
	lock = &retryLock{p: p}
	dir := filepath.Join(dataDir, masqRetryDir)
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return lock, nil, nil
	}
	if err != nil {
		return lock, nil, fmt.Errorf("masquerade chains left by earlier DELs: %w", err)
	}
	held := false
	defer func() {
		if !held {
			d.Close()
		}
	}()
	// Another command retrying now takes the records this one would, and
	// a later one those it leaves: waiting for it would queue every
	// command of the node behind its retries, each of which may wait for
	// the xtables lock. Only an ADD of a container with an attachment
	// recorded in the network must wait: its own, to remove that first;
	// another interface's, whose retry, finding no attachment of the
	// container saved, may be removing the container's iptables chain,
	// which the ADD's delegate is about to make or keep.
	wait := false
	if own != "" {
		network, id, _ := recordParts(own)
		// The parts hold no pattern characters (see attachmentOf).
		same, _ := filepath.Glob(filepath.Join(dir, network+":"+id+":*"))
		wait = len(same) > 0
	}
	now, _ := p.clock()
	limit := time.Duration(0)
	if wait {
		limit = masqLockWait
	}
	locked, err := p.flockWithin(d, limit, masqLockPoll)
	if err != nil {
		return lock, nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if !locked && !wait {
		return lock, nil, nil
	}
	if !locked {
		return lock, masqLockBusy(dir, own), nil
	}
	if wait {
		// Kept until the ADD has saved: a retry before would find
		// no attachment of the container saved and remove its chain,
		// which the ADD's delegate is about to make or keep.
		held = true
		lock.d, lock.dir, lock.own = d, dir, own
	}
	names, latest, err := recordsByAge(d)
	if err != nil {
		return lock, nil, fmt.Errorf("masquerade chains left by earlier DELs: %w", err)
	}
	retry := func(name string) error {
		network, id, ifName := recordParts(name)
		inUse := chainInUse(dataDir, network, id, "")
		path := filepath.Join(dir, name)
		if err := p.masqChains().Remove(network, id, ifName, !inUse); err != nil {
			what := fmt.Sprintf("remove masquerading of container %s interface %s in network %s, left by its DEL", id, ifName, network)
			r := readMasqRecord(path, now())
			r.FailedRetries++
			if age := now().Sub(r.Since); age >= masqRetryFor && r.FailedRetries >= masqRetryTries {
				if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
					return fmt.Errorf("%s: %w", what, errors.Join(err, rerr))
				}
				// The cause last: iptables' message may take lines.
				return fmt.Errorf("%s: %w after %v and %d failed retries: it may still masquerade the next pod given the address; %s; the last failure: %w",
					what, errMasqGivenUp, age.Round(time.Second), r.FailedRetries, masqByHand(network, id, ifName, !inUse), err)
			}
			werr := writeMasqRecord(path, r)
			// Last in the next command's order, so that a record that
			// fails for good does not stop the others' retries.
			last := time.Now()
			if !last.After(latest) {
				last = latest.Add(time.Nanosecond)
			}
			_ = os.Chtimes(path, last, last)
			return errors.Join(fmt.Errorf("%s: %w", what, err), werr)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if own != "" && slices.Contains(names, own) {
		if err := retry(own); errors.Is(err, errMasqGivenUp) {
			// Forgotten: no later retry can remove the chain under
			// the pod the ADD is for.
			return lock, nil, err
		} else if err != nil {
			return lock, err, nil
		}
	}
	stop := now().Add(masqRetryBudget)
	for _, name := range names {
		network, id, ifName := recordParts(name)
		if name == own || utils.ValidateNetworkName(network) != nil || utils.ValidateContainerID(id) != nil || utils.ValidateInterfaceName(ifName) != nil {
			continue // not a record (a temporary file of atomicfile's)
		}
		if !now().Before(stop) {
			break
		}
		if err := retry(name); err != nil {
			return lock, nil, err
		}
	}
	return lock, nil, nil
}

// masqLockBusy is ADD's error when another command still holds dir's lock
// (masqRetryDir's) after masqLockWait; own is the ADD's attachment.
func masqLockBusy(dir, own string) error {
	network, id, _ := recordParts(own)
	return fmt.Errorf("another agentd-cni command still holds the lock of %s after %v: it may be removing the masquerading of container %s in network %s, left by an earlier DEL, which this ADD's delegate would make or keep; try again later",
		dir, masqLockWait, id, network)
}

// retryLock is masqRetryDir's lock as retryMasq leaves it to an ADD that
// waited for it: held from the retries until the ADD has saved. It holds
// nothing (d nil) for any other command. One goroutine uses it.
type retryLock struct {
	p *Plugin
	// d is masqRetryDir open, whose flock is the lock; nil once unlocked.
	d *os.File
	// dir is its path and own the ADD's attachment, for retake's error.
	dir, own string
	// released says that release let go of the flock and retake has not
	// taken it again.
	released bool
}

// unlock lets go of the lock for good. It may be called again.
func (l *retryLock) unlock() {
	if l.d != nil {
		l.d.Close()
		l.d = nil
	}
}

// release lets go of the lock while the ADD waits for something else (the
// xtables lock): other ADDs of recorded containers would otherwise wait
// for it, and fail after masqLockWait.
func (l *retryLock) release() {
	if l.d == nil || l.released {
		return
	}
	// Unlocking an open flock of one's own fails only for a bad file.
	_ = syscall.Flock(int(l.d.Fd()), syscall.LOCK_UN)
	l.released = true
}

// retake takes again the lock release let go of, waiting masqLockWait at
// most for the command holding it, and then fails with "try again later"
// as retryMasq does; without a release it does nothing. A retry that
// another command ran meanwhile has ended by then, and may have removed
// the container's iptables chain: harmless before the delegate, which
// makes it again. One running while the ADD saves and its delegate runs
// could remove it under the pod, the reason the lock is held at all.
func (l *retryLock) retake() error {
	if l.d == nil || !l.released {
		return nil
	}
	locked, err := l.p.flockWithin(l.d, masqLockWait, masqLockPoll)
	if err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("lock %s: %v", l.dir, err), "")
	}
	if !locked {
		return types.NewError(types.ErrTryAgainLater, masqLockBusy(l.dir, l.own).Error(), "")
	}
	l.released = false
	return nil
}

// flockWithin takes f's flock (exclusive), trying again every poll until
// limit has passed on the plugin's clock, and says whether it has it:
// false when another open file of it still holds it then, at once for a
// limit of 0. Polled rather than blocking, so that a holder that never
// lets go cannot hold the command for good.
func (p *Plugin) flockWithin(f *os.File, limit, poll time.Duration) (bool, error) {
	now, sleep := p.clock()
	deadline := now().Add(limit)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return false, err
		}
		if !now().Before(deadline) {
			return false, nil
		}
		sleep(poll)
	}
}

// masqByHand says how to remove by hand the masquerading of network's
// attachment containerID, ifName (see masqChains): if chain, its
// container's iptables chain and the rules jumping to it, in both
// families; and its nftables rules.
func masqByHand(network, containerID, ifName string, chain bool) string {
	nft := fmt.Sprintf("each rule of `nft -a list chain inet %[1]s %[2]s` whose comment starts with %[3]s (nft delete rule inet %[1]s %[2]s handle <handle>)",
		nftMasqTable, nftMasqChain, nftMasqHash(network, containerID, ifName))
	if !chain {
		return "remove it by hand: delete " + nft
	}
	return fmt.Sprintf("remove it by hand: delete each rule `iptables -t nat -S | grep -e '-j %[1]s$'` prints (run it with -A turned into -D), then iptables -t nat -F %[1]s and iptables -t nat -X %[1]s, and the same with ip6tables; and delete %[2]s",
		masqChainName(network, containerID), nft)
}

// recordsByAge are the names in the directory d, the least recently
// recorded or retried first (by modification time, then name), and the
// latest of their times: retryMasq stops at the first failure, and moves
// a failed record's time past all of them.
func recordsByAge(d *os.File) (names []string, latest time.Time, err error) {
	ents, err := d.ReadDir(-1)
	if err != nil {
		return nil, time.Time{}, err
	}
	type record struct {
		name string
		mod  time.Time
	}
	var recs []record
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // gone since the listing (a temporary file renamed)
		}
		recs = append(recs, record{e.Name(), fi.ModTime()})
		if fi.ModTime().After(latest) {
			latest = fi.ModTime()
		}
	}
	slices.SortFunc(recs, func(a, b record) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	names = make([]string, len(recs))
	for i, r := range recs {
		names[i] = r.name
	}
	return names, latest, nil
}

// recordParts splits a name in masqRetryDir into the attachment's network,
// container ID and interface; "" for a part that is not there.
func recordParts(name string) (network, containerID, ifName string) {
	network, rest, _ := strings.Cut(name, ":")
	containerID, ifName, _ = strings.Cut(rest, ":")
	return network, containerID, ifName
}

// releaseOnly is the subnet.env DEL gives the delegate when it has neither a
// saved configuration nor a readable subnet.env. Only the attachment's
// identity matters to a DEL: host-local frees whatever address it holds for
// the container ID and interface name, whatever range it is given, and
// bridge deletes the interface by name. The range must merely be valid; it
// is TEST-NET-1 (RFC 5737) so that no reader takes it for a real subnet.
// Its IPMasq is replaced by release (see masqChains).
var releaseOnly = subnetenv.Env{
	Network: netip.MustParsePrefix("192.0.2.0/24"),
	Subnet:  netip.MustParsePrefix("192.0.2.1/24"),
	MTU:     1500,
}

// masqChains are where bridge (or ptp) masquerades a container's traffic,
// made by ADD when it gave the delegate ipMasq true (FLANNEL_IPMASQ false
// then): with iptables, a nat chain per network and container ID, with a
// POSTROUTING rule per pod address jumping to it (see iptablesMasq); with
// nftables (containernetworking/plugins v1.5 and later, told
// "ipMasqBackend": "nftables" or on a node without iptables), a rule per
// pod address, commented with the attachment's hash (see nftMasq). The
// delegate removes them on DEL only when its configuration says ipMasq, and
// only while it finds the pod's interface; it deletes the interface in the
// same DEL. So a DEL told ipMasq false, or one without the pod's network
// namespace, leaves them for good, masquerading whichever pod gets the
// address next, its traffic to other hosts' pods included (agentd's own
// masquerading leaves that alone). Nor can DEL say ipMasq regardless: where
// no chain is, Debian's bridge 1.1.1 with iptables-nft fails the DEL
// ("Chain … does not exist").
type masqChains interface {
	// Has says whether network's attachment containerID, ifName is
	// masqueraded: its container's iptables chain or its nftables rules
	// are there. An error is a look-up that failed where none was found.
	Has(network, containerID, ifName string) (bool, error)
	// Partial says whether network's container containerID has its
	// iptables chain in some of fams, the IP versions of its addresses
	// (savedFamilies), and not in the others. An error is a look-up that
	// failed.
	Partial(network, containerID string, fams []iptables.Protocol) (bool, error)
	// Remove removes the attachment's nftables rules and, if chain, its
	// container's iptables chain and the POSTROUTING rules jumping to it;
	// none there is success.
	Remove(network, containerID, ifName string, chain bool) error
}

func (p *Plugin) masqChains() masqChains {
	if p.masq != nil {
		return p.masq
	}
	return hostMasq{}
}

// hostMasq is masqChains in iptables and nftables.
type hostMasq struct{}

var _ masqChains = hostMasq{}

func (hostMasq) Has(network, containerID, ifName string) (bool, error) {
	has, err := iptablesMasq{}.Has(network, containerID)
	if has {
		return true, nil
	}
	has, nftErr := nftMasq{}.Has(network, containerID, ifName)
	if has {
		return true, nil
	}
	return false, errors.Join(err, nftErr)
}

func (hostMasq) Partial(network, containerID string, fams []iptables.Protocol) (bool, error) {
	return iptablesMasq{}.Partial(network, containerID, fams)
}

func (hostMasq) Remove(network, containerID, ifName string, chain bool) error {
	var err error
	if chain {
		err = iptablesMasq{}.Remove(network, containerID)
	}
	return errors.Join(err, nftMasq{}.Remove(network, containerID, ifName))
}

// iptablesMasq is bridge's masquerade chains in the nat tables of iptables
// and ip6tables.
type iptablesMasq struct{}

var masqFamilies = []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6}

// xtablesWait is how long, in seconds, each iptables command waits for the
// xtables lock that another program (kube-proxy, firewalld, `iptables -w`)
// holds: as long as agentd's own (`iptables-restore --wait=1`).
// go-iptables' NewWithProtocol gives --wait without a limit, so legacy
// iptables waited for as long as the lock was held, and DEL with it:
// containerd's StopPodSandbox, and its teardown of a failed ADD, hung. Past
// it iptables fails with exit status 4 ("Another app is currently holding
// the xtables lock. Stopped waiting after 1s."), which DEL logs (see Del).
// iptables with nf_tables takes no such lock.
const xtablesWait = 1

// newIPTables is go-iptables for family proto, waiting xtablesWait for the
// xtables lock.
func newIPTables(proto iptables.Protocol) (*iptables.IPTables, error) {
	return iptables.New(iptables.IPFamily(proto), iptables.Timeout(xtablesWait))
}

// Has says whether the chain of network's container containerID is there.
// Without iptables there is none. An error is a look-up that failed in a
// family where the chain was not found.
func (iptablesMasq) Has(network, containerID string) (bool, error) {
	chain := masqChainName(network, containerID)
	var errs []error
	for _, proto := range masqFamilies {
		ipt, err := newIPTables(proto)
		if err != nil {
			continue // no iptables of this family, so no chain
		}
		ok, err := chainExists(ipt, chain)
		if err != nil {
			errs = append(errs, fmt.Errorf("look for masquerade chain %s: %w", chain, err))
			continue
		}
		if ok {
			return true, nil
		}
	}
	return false, errors.Join(errs...)
}

// Partial says whether that chain is there in some of fams and not in the
// others: a family without iptables has none.
func (iptablesMasq) Partial(network, containerID string, fams []iptables.Protocol) (bool, error) {
	chain := masqChainName(network, containerID)
	found, missing := false, false
	for _, proto := range fams {
		ipt, err := newIPTables(proto)
		if err != nil {
			missing = true
			continue
		}
		ok, err := chainExists(ipt, chain)
		if err != nil {
			return false, fmt.Errorf("look for masquerade chain %s: %w", chain, err)
		}
		found, missing = found || ok, missing || !ok
	}
	return found && missing, nil
}

// savedFamilies are the IP versions of the subnets in the ipam section of
// the delegate configuration d (its ranges, or a single-range "subnet" as
// flannel's plugin once saved, whatever the case of these keys, see
// pluginKeys): those of the attachment's addresses, which bridge
// masquerades, each in its family's chain.
func savedFamilies(d map[string]any) []iptables.Protocol {
	d, _ = pluginKeys(d)
	ipam, _ := d["ipam"].(map[string]any)
	subnets := []any{ipam["subnet"]}
	sets, _ := ipam["ranges"].([]any)
	for _, set := range sets {
		ranges, _ := set.([]any)
		for _, r := range ranges {
			if m, ok := r.(map[string]any); ok {
				subnets = append(subnets, m["subnet"])
			}
		}
	}
	var fams []iptables.Protocol
	for _, s := range subnets {
		str, _ := s.(string)
		p, err := netip.ParsePrefix(str)
		if err != nil {
			continue
		}
		fam := iptables.ProtocolIPv4
		if !p.Addr().Unmap().Is4() {
			fam = iptables.ProtocolIPv6
		}
		if !slices.Contains(fams, fam) {
			fams = append(fams, fam)
		}
	}
	return fams
}

// Remove deletes that chain, and first the POSTROUTING rules jumping to
// it, as the delegate's DEL would: by the spec its ADD gave them, with the
// source address read from the rule. A rule of another shape stays, and the
// chain it jumps to with it: that is an error (the chain is in use), not a
// silent success.
func (iptablesMasq) Remove(network, containerID string) error {
	chain := masqChainName(network, containerID)
	comment := fmt.Sprintf("name: %q id: %q", network, containerID)
	var errs []error
	for _, proto := range masqFamilies {
		ipt, err := newIPTables(proto)
		if err != nil {
			continue // no iptables of this family, so no chain
		}
		if ok, err := chainExists(ipt, chain); err != nil || !ok {
			if err != nil {
				errs = append(errs, fmt.Errorf("look for masquerade chain %s: %w", chain, err))
			}
			continue
		}
		rules, err := ipt.List("nat", "POSTROUTING")
		if err != nil {
			errs = append(errs, fmt.Errorf("list nat POSTROUTING: %w", err))
			continue
		}
		for _, r := range rules {
			if src, ok := masqJumpSource(r, chain); ok {
				if err := ipt.DeleteIfExists("nat", "POSTROUTING", "-s", src, "-j", chain, "-m", "comment", "--comment", comment); err != nil {
					errs = append(errs, fmt.Errorf("delete nat POSTROUTING rule for %s: %w", src, err))
				}
			}
		}
		if err := ipt.ClearAndDeleteChain("nat", chain); err != nil {
			errs = append(errs, fmt.Errorf("delete masquerade chain %s: %w", chain, err))
		}
	}
	return errors.Join(errs...)
}

// masqJumpSource reads rule, a line of `iptables -S POSTROUTING`, for the
// source address of a rule that jumps to chain, as bridge's ADD writes it:
// `-A POSTROUTING -s 10.244.5.4/32 -m comment --comment "name: \"cbr0\" id:
// \"…\"" -j CNI-…`. The source is the field after the first "-s" (the
// comment comes after it), the jump the last two fields. ok is false for a
// rule that jumps elsewhere or names no source, and for one whose source is
// negated (`! -s X`, as iptables -S writes it, or the old `-s ! X`): that
// rule matches every source but X and is not bridge's, so Remove leaves it,
// and the chain with it.
func masqJumpSource(rule, chain string) (src string, ok bool) {
	f := strings.Fields(rule)
	if len(f) < 2 || f[len(f)-2] != "-j" || f[len(f)-1] != chain {
		return "", false
	}
	i := slices.Index(f, "-s")
	if i <= 0 || i+1 >= len(f) || f[i-1] == "!" || f[i+1] == "!" {
		return "", false
	}
	return f[i+1], true
}

// chainExists says whether chain is in ipt's nat table. A nat table the
// kernel cannot give ipt holds no chain: legacy ip6tables on a host booted
// with ipv6.disable=1, or without ip6table_nat, fails every look-up there
// with exit status 3 (VERSION_PROBLEM) and "can't initialize ip6tables
// table `nat': Address family not supported by protocol", or "…: Table does
// not exist (do you need to insmod?)", where go-iptables' ChainExists
// takes only status 1 for "no such chain". Any other failure stays one:
// status 4 (the xtables lock, or its file, held or refused), and 3 with
// "Permission denied" (root without CAP_NET_ADMIN).
func chainExists(ipt *iptables.IPTables, chain string) (bool, error) {
	ok, err := ipt.ChainExists("nat", chain)
	var e *iptables.Error
	if errors.As(err, &e) && e.ExitStatus() == 3 && noTable(e.Error()) {
		return false, nil
	}
	return ok, err
}

// noTable says whether iptables' message msg is its failure to open a
// table that this kernel does not have: the reasons libiptc gives for
// ENOENT and ENOPROTOOPT (a table or ip_tables module not there) and
// strerror's for EAFNOSUPPORT (no IPv6).
func noTable(msg string) bool {
	if !strings.Contains(msg, "can't initialize") {
		return false
	}
	return strings.Contains(msg, "(do you need to insmod?)") || strings.Contains(msg, "Address family not supported by protocol")
}

// masqChainName is the name the standard plugins give the masquerade chain
// of network's container containerID (their utils.FormatChainName).
func masqChainName(network, containerID string) string {
	sum := sha512.Sum512([]byte(network + containerID))
	return ("CNI-" + hex.EncodeToString(sum[:]))[:28]
}

// GC (CNI 1.1) first retries the removal of masquerade chains that earlier
// DELs could not remove (see masqRetryDir), then releases this network's
// attachments that ADD saved here and the runtime does not list as valid:
// their DEL never came, or came while the runtime had forgotten them. Each
// gets DEL as Del gives it, without a network namespace (GC may take it as
// gone, and bridge then releases the addresses only), then loses its
// masquerade chain (see dropMasqChain) and is forgotten, as by DEL. So do
// the stale attachments saved under another network name whose
// configuration is this network's but for the name (see formerName): after
// the network was renamed in the conflist, the runtime GCs under the new
// name only, and their DEL never comes. Other networks' files stay. Then
// the per-container files of flannel's plugin (and of agentd-cni before the
// per-attachment layout) of containers none of whose attachments is valid
// are released when host-local's store says which interface they were for
// (see gcLegacy). Then the delegate of today's configuration gets the GC,
// if it speaks 1.1.0 (see forward) and subnet.env is readable. Errors do
// not stop it; they are reported together, with the first one's code.
// Without a list of valid attachments (see validAttachments) it does
// nothing.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	n, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if err := checkDataDir(n.DataDir); err != nil {
		return err
	}
	list, err := validAttachments(args.StdinData)
	if err != nil {
		return err
	}
	valid := make(map[types.GCAttachment]bool, len(list))
	validIDs := make(map[string]bool, len(list))
	for _, a := range list {
		valid[a] = true
		validIDs[a.ContainerID] = true
	}
	ents, err := os.ReadDir(n.DataDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	var errs []error
	if _, _, err := p.retryMasq(n.DataDir, ""); err != nil {
		errs = append(errs, err)
	}
	env, envErr := subnetenv.ReadOwnedComplete(n.SubnetFile)
	for _, e := range ents {
		network, rest, ok := strings.Cut(e.Name(), ":")
		id, ifName, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || !e.Type().IsRegular() || valid[types.GCAttachment{ContainerID: id, IfName: ifName}] {
			continue
		}
		owner := n
		if network != n.Name {
			// Released only as this network's, under a former name.
			if envErr != nil || utils.ValidateNetworkName(network) != nil || !formerName(n, env, filepath.Join(n.DataDir, e.Name())) {
				continue
			}
			renamed := *n
			renamed.Name = network
			owner = &renamed
		}
		at, err := attachmentOf(owner, id, ifName)
		if err != nil {
			continue // not a name ADD gives
		}
		err = p.release(owner, at, "", func(typ string, conf []byte) error {
			return p.runDelegate(typ, conf, &invoke.Args{Command: "DEL", ContainerID: id, IfName: ifName, Path: os.Getenv("CNI_PATH")})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s interface %s: %w", id, ifName, err))
		}
	}
	// After the attachments' files: a per-container file that is a second
	// name of one went with it, and a container whose attachment's
	// release failed above keeps its per-container file for the next GC.
	for _, e := range ents {
		id := e.Name()
		if strings.Contains(id, ":") || utils.ValidateContainerID(id) != nil || validIDs[id] {
			continue
		}
		if err := p.gcLegacy(n, env, envErr, id); err != nil {
			errs = append(errs, fmt.Errorf("container %s (flannel's per-container file): %w", id, err))
		}
	}
	if envErr == nil {
		if err := p.forward(n, env, "GC", map[string]any{validKey: list, oldValidKey: list}); err != nil {
			errs = append(errs, err)
		}
	}
	return joinErrors("GC", errs)
}

// gcLegacy releases, for GC, the container's per-container file (see
// attachment's legacy) when it is the only record of an attachment: one
// name, written by flannel's plugin or agentd-cni before the per-attachment
// layout (a second name is an attachment file's, released with it). GC
// calls it only for a container none of whose attachments in the network
// the runtime lists as valid (envErr is subnet.env's reading, env what it
// read), so whichever interface the file was for, that attachment is
// stale. It is released when it names the network, or a former name of it
// (see formerConf; not while subnet.env cannot be read), and its interface
// is known: the file does not say it, but host-local records it beside the
// address, and releases only the address of the container ID and
// CNI_IFNAME its DEL is given (see hostLocalIfNames). With exactly one
// interface there, the file gets the delegate's DEL with it and no network
// namespace, as an attachment's file does, then its masquerade chain and
// the file go. Otherwise it stays: another IPAM plugin, an address already
// freed (nothing to release but the file, which the runtime's DEL takes), or
// more than one interface, of which the file serves one.
func (p *Plugin) gcLegacy(n *NetConf, env subnetenv.Env, envErr error, id string) error {
	path := filepath.Join(n.DataDir, id)
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || links(fi) > 1 {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	d, err := decodeSaved(path, b)
	if err != nil {
		return nil
	}
	name, _ := savedName(b)
	owner := n
	if name != n.Name {
		if envErr != nil || utils.ValidateNetworkName(name) != nil || !formerConf(n, env, d) {
			return nil
		}
		renamed := *n
		renamed.Name = name
		owner = &renamed
	}
	ifNames, err := hostLocalIfNames(b, name, id)
	if err != nil {
		return fmt.Errorf("find its interface in host-local's store: %w", err)
	}
	if len(ifNames) != 1 {
		return nil
	}
	at, err := attachmentOf(owner, id, ifNames[0])
	if err != nil {
		return nil
	}
	if _, err := os.Lstat(at.path); err == nil {
		// That attachment's file, whose release failed: readSaved would
		// take it first.
		return nil
	}
	return p.release(owner, at, "", func(typ string, conf []byte) error {
		return p.runDelegate(typ, conf, &invoke.Args{Command: "DEL", ContainerID: id, IfName: at.ifName, Path: os.Getenv("CNI_PATH")})
	})
}

// formerName says whether the delegate configuration saved in file, an
// attachment's of another network name, is the one this network's
// configuration n gives today (with subnet.env's env) but for what follows
// the ADD that saved it or the pod: its name, CNI version, MTU, ipMasq and
// runtimeConfig. The same delegate, bridge, ipam section and ranges: it is
// then this network's under a name the conflist gave it before (see
// renamedSaved), whose stale attachments no runtime will DEL or GC under
// that name again. Another network sharing dataDir differs in some key
// (its own bridge, other ranges; sharing both, the two would hand out one
// address twice on one bridge). A file that does not decode, one of a
// subnet this host had before, or of a network whose configuration was
// changed as it was renamed, is not taken: left for good rather than a
// running pod's address freed.
func formerName(n *NetConf, env subnetenv.Env, file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	var saved map[string]any
	if json.Unmarshal(b, &saved) != nil {
		return false
	}
	return formerConf(n, env, saved)
}

// formerConf says whether the delegate configuration saved, of another
// network name, is the one n gives today with env but for what follows the
// ADD or the pod (see formerName). A forceAddress that saved lacks is not
// compared either: flannel's plugin never sets it, and its per-container
// files (see renamedLegacy) would otherwise never match. Nor is how the
// range is written: flannel's plugins before dual-stack saved it as ipam's
// single "subnet", which host-local takes as one range (see asRanges).
// The keys left out are left out whatever their case (a per-container file
// a tool wrote with "Name"), as the plugins read them (see savedName); the
// others agentd-cni writes are compared whatever their case too (see
// pluginKeys), and a file giving one of them twice is not taken.
func formerConf(n *NetConf, env subnetenv.Env, saved map[string]any) bool {
	today, err := DelegateConf(n, env)
	if err != nil {
		return false
	}
	compared := func(d map[string]any) (map[string]any, bool) {
		d = maps.Clone(d)
		maps.DeleteFunc(d, func(k string, _ any) bool {
			return slices.ContainsFunc([]string{"name", "cniVersion", "mtu", "ipMasq", "runtimeConfig"}, func(key string) bool { return strings.EqualFold(k, key) })
		})
		return pluginKeys(d)
	}
	saved, okSaved := compared(saved)
	today, okToday := compared(today)
	if !okSaved || !okToday {
		return false
	}
	saved = asRanges(saved)
	if _, ok := saved["forceAddress"]; !ok {
		delete(today, "forceAddress")
	}
	a, errA := json.Marshal(saved)
	t, errT := json.Marshal(today)
	return errA == nil && errT == nil && string(a) == string(t)
}

// asRanges is the delegate configuration d with an ipam "subnet" (the
// single range of flannel's plugins before dual-stack) written as the
// "ranges" of one range that DelegateConf writes; d itself is left as it
// is. One with "ranges" too is returned as it is: host-local would take
// both, and DelegateConf never writes that. d's keys are spelled as
// pluginKeys spells them.
func asRanges(d map[string]any) map[string]any {
	ipam, ok := d["ipam"].(map[string]any)
	if !ok {
		return d
	}
	sn, ok := ipam["subnet"].(string)
	if _, hasRanges := ipam["ranges"]; !ok || hasRanges {
		return d
	}
	ipam = maps.Clone(ipam)
	delete(ipam, "subnet")
	ipam["ranges"] = []any{[]any{map[string]any{"subnet": sn}}}
	d = maps.Clone(d)
	d["ipam"] = ipam
	return d
}

// rangeKeys and routeKeys are the keys agentd-cni reads or compares in
// each range of a saved delegate configuration's ipam "ranges" and in each
// of its "routes"; at its top they are delegateKeys, in its ipam section
// ipamKeys.
var (
	rangeKeys = []string{"subnet"}
	routeKeys = []string{"dst", "gw"}
)

// pluginKeys is the saved delegate configuration d with those keys spelled
// as agentd-cni spells them, whatever their case in d: bridge and
// host-local decode their configuration with encoding/json, which matches
// keys whatever their case, so to host-local an ipam "Subnet" is the
// single range "subnet" and "IPAM" is ipam (a per-container file a tool
// wrote, an operator's edit). d itself is left as it is. A key given in two
// spellings is left as written and ok is false: which of them a plugin
// takes depends on their order in the file, which d no longer has.
func pluginKeys(d map[string]any) (folded map[string]any, ok bool) {
	ok = true
	fold := func(m map[string]any, keys []string) map[string]any {
		m = maps.Clone(m)
		_ = canonicalKeys(m, "", keys, true) // keeping two spellings, it cannot fail
		ok = ok && canonicalKeys(m, "", keys, false) == nil
		return m
	}
	each := func(v any, f func(any) any) any {
		list, isList := v.([]any)
		if !isList {
			return v
		}
		list = slices.Clone(list)
		for i, e := range list {
			list[i] = f(e)
		}
		return list
	}
	object := func(keys []string) func(any) any {
		return func(v any) any {
			if m, isObject := v.(map[string]any); isObject {
				return fold(m, keys)
			}
			return v
		}
	}
	d = fold(d, delegateKeys)
	ipam, isObject := d["ipam"].(map[string]any)
	if !isObject {
		return d, ok
	}
	ipam = fold(ipam, ipamKeys)
	if v, has := ipam["ranges"]; has {
		ipam["ranges"] = each(v, func(set any) any { return each(set, object(rangeKeys)) })
	}
	if v, has := ipam["routes"]; has {
		ipam["routes"] = each(v, object(routeKeys))
	}
	d["ipam"] = ipam
	return d, ok
}

// GC's keys for the list of valid attachments: the spec's, and the name
// the 1.1.0 spec's text first gave it (containernetworking/cni#1101).
// libcni sends both; a runtime written from the spec's text may send only
// the old one.
const (
	validKey    = "cni.dev/valid-attachments"
	oldValidKey = "cni.dev/attachments"
)

// validAttachments is GC's list of the attachments still valid, from
// validKey or else oldValidKey; null is an empty list (CRI-O sends it for a
// network none of whose pods is valid). Without either key nothing tells a
// running pod from a stale one (cnitool gc sends neither): that is an
// error, not an empty list, which would release every attachment and free
// running pods' addresses for the next ADD to hand out again.
func validAttachments(stdin []byte) ([]types.GCAttachment, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &keys); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network configuration: %v", err), "")
	}
	for _, k := range []string{validKey, oldValidKey} {
		raw, ok := keys[k]
		if !ok {
			continue
		}
		var list []types.GCAttachment
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("GC: %q is not a list of attachments: %v", k, err), "")
		}
		return list, nil
	}
	return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
		"GC: the network configuration has no %q (nor %q) list of the attachments still valid, so a running pod cannot be told from a stale one; nothing was released (cnitool gc sends no list; a runtime sends one, empty when no pod of the network is valid)",
		validKey, oldValidKey), "")
}

// Status (CNI 1.1) says whether ADD can be served now: not while subnet.env
// is missing (agentd has not leased yet: a new node, a reboot), unreadable
// or incomplete, nor with a dataDir that ADD refuses, nor when the delegate
// says so (see forward). Its code is
// then 50, "plugin not available"; containerd reports the node's network not
// ready meanwhile, so the kubelet starts no pod there, where ADD would wait
// for subnet.env and fail after subnetFileWait.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	n, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	// Every ADD fails on a dataDir others could write (checkDataDir):
	// the node is not ready for pods either.
	if err := checkDataDir(n.DataDir); err != nil {
		var te *types.Error
		errors.As(err, &te)
		return types.NewError(types.ErrPluginNotAvailable, te.Msg, "")
	}
	env, err := readSubnetEnv(n.SubnetFile)
	if err != nil {
		var te *types.Error
		errors.As(err, &te)
		return types.NewError(types.ErrPluginNotAvailable, te.Msg, "")
	}
	if err := p.forward(n, env, "STATUS", nil); err != nil {
		var te *types.Error
		if errors.As(err, &te) && (te.Code == types.ErrPluginNotAvailable || te.Code == types.ErrLimitedConnectivity) {
			return te
		}
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	return nil
}

// forward runs verb, GC or STATUS, on the delegate of the configuration ADD
// would give it now, in the network's version with extra keys added, if the
// delegate's VERSION lists that version: the spec asks a delegating plugin
// to pass both on, and a delegate that stops at 1.0.0 knows neither.
func (p *Plugin) forward(n *NetConf, env subnetenv.Env, verb string, extra map[string]any) error {
	d, err := DelegateConf(n, env)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	d["cniVersion"] = n.CNIVersion
	maps.Copy(d, extra)
	b, err := json.Marshal(d)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	typ := d["type"].(string)
	path, err := p.findDelegate(typ)
	if err != nil {
		return delegateError(d, verb, err)
	}
	info, err := invoke.GetVersionInfo(context.Background(), path, p.Exec)
	if err != nil {
		return delegateError(d, "VERSION", err)
	}
	if !slices.Contains(info.SupportedVersions(), n.CNIVersion) {
		return nil
	}
	if err := p.runDelegate(typ, b, &invoke.Args{Command: verb, Path: os.Getenv("CNI_PATH")}); err != nil {
		return delegateError(d, verb, err)
	}
	return nil
}

// runDelegate runs the delegate typ with the environment args, for the
// commands whose CNI_ variables are not this process's own.
func (p *Plugin) runDelegate(typ string, conf []byte, args *invoke.Args) error {
	path, err := p.findDelegate(typ)
	if err != nil {
		return err
	}
	return invoke.ExecPluginWithoutResult(context.Background(), path, conf, args, p.Exec)
}

// findDelegate looks for plugin typ in CNI_PATH, as invoke's Delegate
// functions do.
func (p *Plugin) findDelegate(typ string) (string, error) {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	if p.Exec != nil {
		return p.Exec.FindInPath(typ, paths)
	}
	return invoke.FindInPath(typ, paths)
}

// joinErrors is errs as one CNI error, with the first one's code.
func joinErrors(verb string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	code := uint(types.ErrInternal)
	var te *types.Error
	if errors.As(errs[0], &te) {
		code = te.Code
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return types.NewError(code, verb+": "+strings.Join(msgs, "; "), "")
}

// removeSaved forgets an attachment's saved delegate configuration: the
// files readSaved named, in its order, then the temporary files of saves of
// at that were cut short (an ADD killed, a power loss, before its rename):
// no later ADD replaces the attachment's file, which would remove them; and
// those of a former name's file it took (see renamedSaved).
//
// It holds save's lock on dataDir, and there looks again at the legacy
// name: an ADD of the attachment again, at the same time as its DEL, may
// have taken that name off the attachment's file when readSaved looked,
// and linked it to its new file since. Removing the attachment's name
// alone left the configuration under the legacy name alone, a file that
// looks like flannel's, which no DEL of the attachment removed and another
// attachment's DEL would take (seen with the ADD held in its save and the
// DEL in its delegate's, before 2026-12-06).
func (p *Plugin) removeSaved(at attachment, forget []string) error {
	if len(forget) > 0 {
		d, err := p.lockDataDir(filepath.Dir(at.path), "forget delegate configuration")
		if err != nil {
			return err
		}
		defer d.Close()
		if forget[0] == at.path && sameFile(at.legacy, at.path) {
			forget = append([]string{at.legacy}, forget...)
		}
	}
	for _, f := range forget {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return types.NewError(types.ErrIOFailure, err.Error(), "")
		}
	}
	atomicfile.RemoveLeftovers(at.path)
	for _, f := range forget {
		if f != at.path && f != at.legacy {
			// A former name's file (see renamedSaved): no ADD or DEL
			// under that name will remove its leftovers.
			atomicfile.RemoveLeftovers(f)
		}
	}
	return nil
}

// Check runs the delegate's CHECK with the configuration ADD saved for the
// attachment (see readSaved), in the network's CNI version, and the
// runtime's prevResult. Before that it fails a container whose saved subnet
// is not this host's any more (see checkSubnets). A missing subnet.env skips that comparison; an unreadable
// or invalid one fails CHECK as it fails ADD.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	n, at, err := loadConf(args)
	if err != nil {
		return err
	}
	saved, b, _, left, err := readSaved(n, at)
	if errors.Is(err, fs.ErrNotExist) && len(left) > 0 {
		// As before renamedSaved left such a file: a pod added under a
		// former name, whose saved configuration is damaged.
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration %s: %v", left[0].path, left[0].err), "")
	}
	if errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no network configuration saved for container %s interface %s in network %s (%s): ADD did not run on this host", args.ContainerID, args.IfName, n.Name, at.path), "")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	d, err := decodeSaved(saved, b)
	if err != nil {
		return err
	}
	// A missing subnet.env says nothing certain about the pod: agentd
	// removes it while it has no subnet (another host took it; a release)
	// and writes it again once it has one, and from then on a moved subnet
	// is caught here. Failing meanwhile would report every pod broken for
	// what ADD calls "try again later".
	env, err := readSubnetEnv(n.SubnetFile)
	var te *types.Error
	switch {
	case errors.As(err, &te) && te.Code == types.ErrTryAgainLater:
	case err != nil:
		return err
	default:
		if err := checkSubnets(args.ContainerID, saved, d, n.SubnetFile, env); err != nil {
			return err
		}
	}
	// The saved cniVersion is the one of the network ADD ran under (flannel's
	// 0.3.1 conflist, say). CHECK runs under today's network, whose
	// prevResult is in today's version, and bridge refuses CHECK for a
	// configuration older than 0.4.0. A 1.1.0 network's prevResult goes to
	// the delegate in its version, 1.0.0.
	if n.CNIVersion != "" {
		d["cniVersion"] = delegateVersion(n.CNIVersion)
	}
	if n.RawPrevResult != nil {
		d["prevResult"] = n.RawPrevResult
		if v := delegateVersion(n.CNIVersion); v != n.CNIVersion {
			if d["prevResult"], err = prevResultIn(n, v); err != nil {
				return err
			}
		}
	}
	if b, err = json.Marshal(d); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if err := invoke.DelegateCheck(context.Background(), d["type"].(string), b, p.Exec); err != nil {
		return delegateError(d, "CHECK", err)
	}
	return nil
}

// prevResultIn is the network's prevResult in version v.
func prevResultIn(n *NetConf, v string) (map[string]any, error) {
	conf := n.NetConf
	if err := version.ParsePrevResult(&conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	res, err := conf.PrevResult.GetAsVersion(v)
	if err != nil {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("prevResult: %v", err), "")
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	// The library reads some results it cannot write back: an IP without
	// an address comes out as "<nil>". The delegate would refuse that with
	// its own puzzling message; refuse it here, naming prevResult.
	if _, err := version.NewResult(v, b); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: %v", err), "")
	}
	var prev map[string]any
	if err := json.Unmarshal(b, &prev); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	return prev, nil
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

func (p *Plugin) stderr() io.Writer {
	if p.Stderr != nil {
		return p.Stderr
	}
	return os.Stderr
}

// loadConf reads the network configuration on stdin and where the
// attachment's delegate configuration is saved, with CNI error codes.
func loadConf(args *skel.CmdArgs) (*NetConf, attachment, error) {
	return loadConfWith(args, LoadConf)
}

// loadConfWith is loadConf, parsing the configuration with load.
func loadConfWith(args *skel.CmdArgs, load func([]byte) (*NetConf, error)) (*NetConf, attachment, error) {
	n, err := load(args.StdinData)
	if err != nil {
		return nil, attachment{}, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if err := checkDataDir(n.DataDir); err != nil {
		return nil, attachment{}, err
	}
	at, err := attachmentOf(n, args.ContainerID, args.IfName)
	if err != nil {
		return nil, attachment{}, err
	}
	return n, at, nil
}

// checkDataDir refuses a dataDir that someone other than root can write to
// (atomicfile.CheckOwned), or replace by one of theirs, being able to write
// to a directory above it (atomicfile.CheckPath): DEL, CHECK and GC run the
// delegate that a configuration saved there names, with that configuration,
// as root. A dataDir not there yet passes (ADD makes it 0700); one that
// cannot be opened or looked up is left to the step that uses it to report.
func checkDataDir(dir string) error {
	if err := atomicfile.CheckPath(dir); errors.Is(err, atomicfile.ErrUntrusted) {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"dataDir": %v; another user could make this plugin run any plugin with any configuration`, err), "")
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	if err := atomicfile.CheckOwned(d, true); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`"dataDir" %v; another user could make this plugin run any plugin with any configuration: make it root's and writable by root only`, err), "")
	}
	return nil
}

// delegateConf is DelegateConf and its JSON, with CNI error codes.
func delegateConf(n *NetConf, env subnetenv.Env) (map[string]any, []byte, error) {
	d, err := DelegateConf(n, env)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return d, b, nil
}

// attachment is where the delegate configuration of one attachment is
// saved. The CNI spec identifies an attachment by network name, container ID
// and interface name, and asks plugins that keep state to key it by all
// three: a container may be added to a network once per interface, and to
// several networks, and DEL of one attachment must leave the others' state
// alone.
type attachment struct {
	// path is dataDir/<network>:<container ID>:<interface>, where ADD
	// saves. No part holds ":" (see attachmentOf), so the name is
	// unambiguous and never a legacy one.
	path string
	// legacy is dataDir/<container ID>, one file per container: where
	// flannel's plugin saves and looks on DEL, and agentd-cni before the
	// per-attachment layout saved. DEL and CHECK still read it (see
	// readSaved), and ADD makes it a second name of path when no other
	// attachment of the container holds it (see save), so that
	// flannel's plugin, after a rollback, releases the pod's addresses.
	legacy string
	// containerID and ifName are the attachment's CNI_CONTAINERID and
	// CNI_IFNAME.
	containerID, ifName string
}

// attachmentOf checks the three parts of the attachment's key as the CNI
// library does (skel refuses the same before the binary's handlers run) and
// names its files. Each part is a plain file name without ":".
func attachmentOf(n *NetConf, containerID, ifName string) (attachment, error) {
	if err := utils.ValidateContainerID(containerID); err != nil {
		return attachment{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_CONTAINERID %q cannot name a file: %s", containerID, err.Msg), "")
	}
	if err := utils.ValidateInterfaceName(ifName); err != nil {
		return attachment{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q: %s", ifName, err.Msg), "")
	}
	if err := utils.ValidateNetworkName(n.Name); err != nil {
		return attachment{}, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network name %q: %s", n.Name, err.Msg), "")
	}
	return attachment{
		path:        filepath.Join(n.DataDir, n.Name+":"+containerID+":"+ifName),
		legacy:      filepath.Join(n.DataDir, containerID),
		containerID: containerID,
		ifName:      ifName,
	}, nil
}

// maxNameLen is the longest name of an attachment's file that ADD takes:
// 255 bytes, the longest file name of Linux's filesystems (NAME_MAX), less
// what atomicfile adds to it for the temporary file it writes first ("."
// before, ".tmp" and up to 10 digits after).
const maxNameLen = 255 - len("..tmp") - 10

// fits refuses, for ADD, an attachment whose file name is longer than
// maxNameLen: saving it would fail with ENAMETOOLONG, or, just over the
// limit, fail or not by the temporary name's digits. Container IDs of the
// common runtimes are 64 characters and interface names at most 15, so a
// long network name is the cause.
func (at attachment) fits(n *NetConf) error {
	name := filepath.Base(at.path)
	if len(name) <= maxNameLen {
		return nil
	}
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
		"network name %q is too long: this attachment's configuration would be saved as <network>:<container ID>:<interface> in %s, a file name of %d bytes, over the %d allowed (255, the longest file name, less %d for the temporary file it is written to first); with this container ID and interface the network name may have at most %d bytes",
		n.Name, n.DataDir, len(name), maxNameLen, 255-maxNameLen, maxNameLen-len(name)+len(n.Name)), "")
}

// save writes the attachment's delegate configuration (path) and gives it
// a second name, the container's legacy file, byte for byte what flannel's
// plugin would have saved there, if that name is free: the first attachment
// of a container (its only one, in the common case) takes it, and a later
// one, or a container whose legacy file flannel's plugin or an older
// agentd-cni wrote, leaves it alone. A hard link, not a copy, so that
// readSaved can tell whose it is: the legacy file is the attachment's
// exactly when both names are the same file, and one with more than one name
// is some attachment's.
//
// A crash after any step leaves a legacy name that was or becomes the
// attachment's either missing or the attachment's file. path is written before the link:
// after a crash between the two the delegate has not run (ADD saves before
// it runs), so nothing is allocated that flannel's plugin would need the
// legacy file to release. An ADD run again takes the legacy name off the
// attachment's file first, then links the new file: replacing path under
// the link would leave the old configuration under the legacy name alone,
// a file that looks like flannel's, which the attachment's DEL would leave
// behind and another attachment's DEL would take.
//
// One save runs at a time in a dataDir (flock on it, lockDataDir), nor does
// one run while a DEL removes saved files (see removeSaved): two ADDs of the
// attachment at once (a runtime retrying one that had not returned yet)
// each looked at the legacy name before the other had linked it, and the
// later one's file replaced the one the name was linked to, which was left
// under the legacy name alone: a file that looks like flannel's, which the
// attachment's DEL left behind (in 63 of 200 tries, before 2026-12-06).
//
// On a filesystem without hard links (vfat, some FUSE and CIFS mounts:
// link fails with EPERM, EOPNOTSUPP or EMLINK) the legacy name is left out
// rather than ADD failed: the pod works, only a rollback to flannel's
// plugin would not release it.
func (p *Plugin) save(at attachment, b []byte) error {
	fail := func(what string, err error) error {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("%s: %v", what, err), "")
	}
	d, err := p.lockDataDir(filepath.Dir(at.path), "save delegate configuration")
	if err != nil {
		return err
	}
	defer d.Close()
	if sameFile(at.legacy, at.path) {
		if err := os.Remove(at.legacy); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail("save delegate configuration for flannel's plugin", err)
		}
		if p.crashed("legacy name removed") {
			return errCrashed
		}
	}
	if err := atomicfile.Write(at.path, b, 0o600); err != nil {
		return fail("save delegate configuration", err)
	}
	if p.crashed("saved") {
		return errCrashed
	}
	link := p.link
	if link == nil {
		link = os.Link
	}
	if err := link(at.path, at.legacy); errors.Is(err, fs.ErrExist) || noHardLinks(err) {
		return nil
	} else if err != nil {
		return fail("save delegate configuration for flannel's plugin", err)
	}
	if err := d.Sync(); err != nil {
		return fail("save delegate configuration for flannel's plugin", err)
	}
	return nil
}

// dataDirLockWait is how long ADD and DEL wait for another command that
// holds dataDir's lock (see lockDataDir), and dataDirLockPoll how often
// they try it. A holder keeps it for a write, an fsync and a link, or a
// few unlinks: milliseconds, unless it hangs (stopped, or stuck on a disk
// that does not answer). Waited for without a limit, such a holder hung
// every ADD and DEL of the node until the runtime killed them, and the
// pods stayed in ContainerCreating or Terminating with no word of why.
const (
	dataDirLockWait = 5 * time.Second
	dataDirLockPoll = 10 * time.Millisecond
)

// lockDataDir opens dataDir and takes save's lock on it (flock), which
// closing the file returns; it waits dataDirLockWait at most for another
// command that holds it, and then fails with code 11, "try again later",
// naming the holder as /proc/locks lists it. Other errors are I/O
// failures. Each begins with what, the step that needed the lock.
func (p *Plugin) lockDataDir(dataDir, what string) (*os.File, error) {
	d, err := os.Open(dataDir)
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("%s: %v", what, err), "")
	}
	locked, err := p.flockWithin(d, dataDirLockWait, dataDirLockPoll)
	if err != nil {
		d.Close()
		return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("%s: lock %s: %v", what, dataDir, err), "")
	}
	if !locked {
		holders := describeHolders(flockHolders(d))
		d.Close()
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf(
			"%s: another process still holds the lock of dataDir %s after %v (%s); agentd-cni holds it for a few milliseconds to save or forget a configuration, so the holder may be hung; try again later",
			what, dataDir, dataDirLockWait, holders), "")
	}
	return d, nil
}

// noHardLinks says whether err is link(2)'s for a filesystem that has no
// hard links, or allows no more of them.
func noHardLinks(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EMLINK)
}

func (p *Plugin) crashed(step string) bool {
	return p.crash != nil && p.crash(step)
}

// sameFile says whether a and b are two names of one existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// readSaved reads the delegate configuration ADD saved for the attachment,
// says which file it read, and which files DEL removes once done (forget).
// The attachment's own file comes first; its forget list starts with the
// legacy file if that is the same file (see save): removing the
// legacy name first means a DEL cut short leaves the attachment's file, not
// a legacy file that would look like flannel's. Without its own file, the
// attachment gets the legacy per-container file, so that pods added before
// an upgrade (or by flannel's plugin) are still released and checked, except
// one that is not a regular file (a symlink, a FIFO), one with a second
// name (another attachment's, see save) or one
// that names another network in its "name": those count as missing. One that
// does not decode is taken, so that DEL can remove it. Which interface a
// legacy file of flannel's was for is not recorded: it serves whichever
// attachment comes first. Then come a file saved for the attachment under
// another network name (see renamedSaved), and last the legacy file when it
// names a former name of the network (see renamedLegacy). Missing is an
// error satisfying errors.Is(err, fs.ErrNotExist), and
// errors.Is(err, syscall.ENAMETOOLONG) too when no file can have the
// attachment's name and none of the others serves it. left are the files
// saved for the attachment under other network names that renamedSaved
// left alone.
func readSaved(n *NetConf, at attachment) (saved string, b []byte, forget []string, left []leftSaved, err error) {
	saved, b, forget, err = readOwnSaved(n, at)
	// Also when no file can have the attachment's name: a network
	// renamed to a name too long for it (whose ADDs all fail, see fits)
	// still gets the DELs of its pods added under the former name.
	if errors.Is(err, fs.ErrNotExist) {
		path, b, forget, left, ok := renamedSaved(n, at)
		if ok {
			return path, b, forget, left, nil
		}
		if b, ok := renamedLegacy(n, at); ok {
			return at.legacy, b, []string{at.legacy}, left, nil
		}
		return saved, nil, nil, left, err
	}
	return saved, b, forget, nil, err
}

// leftSaved is a file saved for an attachment under another network name
// that renamedSaved left alone, and why: it could not be read or decoded.
type leftSaved struct {
	path, network string
	err           error
}

// describe says what l leaves behind, for the operator, at DEL of the
// attachment at, and how to remove it: the delegate's DEL under that name
// never ran, so the address its IPAM plugin gave and bridge's
// masquerading, both named after that network, may still be there.
func (l leftSaved) describe(at attachment) string {
	return fmt.Sprintf("left %s alone (%v): saved for this container and interface under network name %s, it cannot show that this was the network's name before a rename (nor which configuration would release under it); if it was, the pod's address may still be held under that name (host-local: the file holding %s in /var/lib/cni/networks/%s/) and its masquerading too: %s; then remove %s",
		l.path, l.err, l.network, at.containerID, l.network, masqByHand(l.network, at.containerID, at.ifName, true), l.path)
}

// renamedLegacy reads the container's legacy file (see attachment), written
// by flannel's plugin or agentd-cni before the per-attachment layout, when
// it names another network whose configuration is n's today but for the
// name (see formerConf): the network's under a name the conflist gave it
// before, which readOwnSaved takes for another network's. After a rename
// the runtime DELs the pods added before under the new name; without this
// their addresses (in the former name's host-local store), bridge's
// masquerade chain (named after the former name) and the file stayed for
// good. A legacy file with a second name is some attachment's (see save),
// found by renamedSaved if it is this one's. Another network sharing
// dataDir differs in some key and is left alone; so are the file of a
// subnet the host had before, and any while subnet.env cannot be read, as
// GC leaves a former name's attachment files then.
func renamedLegacy(n *NetConf, at attachment) ([]byte, bool) {
	fi, err := os.Lstat(at.legacy)
	if err != nil || !fi.Mode().IsRegular() || links(fi) > 1 {
		return nil, false
	}
	b, err := os.ReadFile(at.legacy)
	if err != nil {
		return nil, false
	}
	var d map[string]any
	if json.Unmarshal(b, &d) != nil {
		return nil, false
	}
	if name, _ := savedName(b); name == n.Name || utils.ValidateNetworkName(name) != nil {
		return nil, false
	}
	env, err := subnetenv.ReadOwnedComplete(n.SubnetFile)
	if err != nil {
		return nil, false
	}
	return b, formerConf(n, env, d)
}

// renamedSaved finds what ADD saved for the attachment at under another
// network name in dataDir: <other>:<container ID>:<interface>. The runtime
// DELs its pods under the network's current name, so after the network was
// renamed in the conflist a pod added before comes with a name nothing was
// saved under; its former name's file still names the delegate
// configuration that allocated its addresses, bridge's masquerade chain
// included (both are named after the network). Only a file whose
// configuration is this network's but for the name (see formerConf) is
// taken, as GC and releaseRenamed take a former name's: a container has
// one interface of a name when the delegate makes it (bridge), but a
// delegate that makes none (host-local alone) lets another network sharing
// dataDir give the container an attachment of the same interface name,
// whose file a DEL with nothing saved under this name (the runtime's DEL
// again) took, freeing that running attachment's address. Another network
// differs in some key; so none is taken while subnet.env cannot be read,
// nor one of a subnet the host had before. The first such file in name
// order that renamedFiles reads is taken, with its legacy second name (see
// save) in its forget list; left are the files renamedFiles leaves.
func renamedSaved(n *NetConf, at attachment) (saved string, b []byte, forget []string, left []leftSaved, ok bool) {
	files, left := renamedFiles(n, at)
	if len(files) == 0 {
		return "", nil, nil, left, false
	}
	env, err := subnetenv.ReadOwnedComplete(n.SubnetFile)
	if err != nil {
		return "", nil, nil, left, false
	}
	i := slices.IndexFunc(files, func(f renamedFile) bool {
		var d map[string]any
		return json.Unmarshal(f.b, &d) == nil && formerConf(n, env, d)
	})
	if i < 0 {
		return "", nil, nil, left, false
	}
	f := files[i]
	forget = []string{f.path}
	if sameFile(at.legacy, f.path) {
		forget = []string{at.legacy, f.path}
	}
	return f.path, f.b, forget, left, true
}

// renamedFile is a file saved for an attachment under another network
// name, as renamedFiles read it.
type renamedFile struct {
	network, path string
	b             []byte
}

// renamedFiles are the files saved for the attachment at under network
// names other than n's (see renamedSaved), in name order. A file that
// cannot be read or decoded (see decodeSaved) is not among them: nothing
// in it shows that its network was this one, and a configuration rebuilt
// under its name from today's conflist could be another network's (its
// bridge, its IPAM plugin). Taken, it got a DEL with a configuration
// rebuilt under the current name, which released nothing of its own, and
// was removed, the only trace of what was left. Such files stay, listed in
// left for DEL to report.
func renamedFiles(n *NetConf, at attachment) (files []renamedFile, left []leftSaved) {
	names, err := os.ReadDir(n.DataDir)
	if err != nil {
		return nil, nil
	}
	suffix := ":" + at.containerID + ":" + at.ifName
	for _, e := range names {
		network, found := strings.CutSuffix(e.Name(), suffix)
		if !found || network == n.Name || utils.ValidateNetworkName(network) != nil || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(n.DataDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			left = append(left, leftSaved{path, network, fmt.Errorf("cannot be read: %w", err)})
			continue
		}
		if _, err := decodeSaved(path, b); err != nil {
			left = append(left, leftSaved{path, network, fmt.Errorf("does not decode: %s", strings.TrimPrefix(err.Error(), "saved configuration "+path+": "))})
			continue
		}
		files = append(files, renamedFile{network, path, b})
	}
	return files, left
}

// readOwnSaved is readSaved without a renamed network's file.
func readOwnSaved(n *NetConf, at attachment) (saved string, b []byte, forget []string, err error) {
	b, err = os.ReadFile(at.path)
	tooLong := errors.Is(err, syscall.ENAMETOOLONG)
	if !errors.Is(err, fs.ErrNotExist) && !tooLong {
		forget = []string{at.path}
		if sameFile(at.legacy, at.path) {
			forget = []string{at.legacy, at.path}
		}
		return at.path, b, forget, err
	}
	if tooLong {
		// ADD saved nothing under that name (see fits); a legacy file of
		// flannel's plugin, named by the container ID alone, may be there.
		defer func() {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w, and %w", err, &fs.PathError{Op: "open", Path: at.path, Err: syscall.ENAMETOOLONG})
			}
		}()
	}
	// Lstat, as chainInUse, renamedLegacy and GC look: neither flannel's
	// plugin nor agentd-cni makes a per-container name that is not a
	// regular file. Followed, a symlink's target served DEL while nothing
	// else counted it, and a FIFO hung DEL in its read.
	fi, err := os.Lstat(at.legacy)
	if err == nil && !fi.Mode().IsRegular() {
		return at.path, nil, nil, fmt.Errorf("%s is not a regular file: %w", at.legacy, fs.ErrNotExist)
	}
	if err == nil && links(fi) > 1 {
		return at.path, nil, nil, fmt.Errorf("%s is another attachment's: %w", at.legacy, fs.ErrNotExist)
	}
	if err == nil {
		b, err = os.ReadFile(at.legacy)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// The attachment's own file is the one to name.
			return at.path, nil, nil, err
		}
		return at.legacy, nil, nil, err
	}
	if name, ok := savedName(b); ok && name != n.Name {
		return at.path, nil, nil, fmt.Errorf("%s is network %q's: %w", at.legacy, name, fs.ErrNotExist)
	}
	return at.legacy, b, []string{at.legacy}, nil
}

// links is the number of names of a file (1 where the system does not say).
func links(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// waitSubnetEnv reads subnet.env as readSubnetEnv does, but while the file
// is missing it looks again every subnetPoll until n.Wait has passed. A
// node's runtime starts pods as soon as the conflist is there: on a new node
// the installer puts it there before agentd has leased, and after a reboot
// it is still there while subnet.env (on /run) is not. A pod that waits
// starts as soon as agentd writes the file, where a failed ADD is retried
// only after the kubelet's back-off, with a FailedCreatePodSandBox event for
// each try. Anything else fails at once: agentd replaces the file
// atomically, so waiting would not mend it.
func (p *Plugin) waitSubnetEnv(n *NetConf) (subnetenv.Env, error) {
	now, sleep := p.clock()
	deadline := now().Add(n.Wait)
	for {
		env, err := readSubnetEnv(n.SubnetFile)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
			return env, err
		}
		if !now().Before(deadline) {
			if n.Wait > 0 {
				te.Msg += fmt.Sprintf(" (waited %v)", n.Wait)
			}
			return env, te
		}
		sleep(subnetPoll)
	}
}

// clock is the plugin's clock: its now and sleep, or the real ones.
func (p *Plugin) clock() (now func() time.Time, sleep func(time.Duration)) {
	now, sleep = p.now, p.sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = time.Sleep
	}
	return now, sleep
}

// readSubnetEnv reads subnet.env (complete: see subnetenv.ParseComplete)
// with CNI error codes: missing is transient (agentd has not written it yet),
// unreadable is an I/O failure, malformed or cut short, or a file that
// someone other than root may have written, is a configuration error.
func readSubnetEnv(path string) (subnetenv.Env, error) {
	env, err := subnetenv.ReadOwnedComplete(path)
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return env, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s does not exist: agentd writes it once it holds this host's subnet (is agentd running on this host?)", path), "")
	case errors.As(err, &pe):
		return env, types.NewError(types.ErrIOFailure, fmt.Sprintf("cannot read subnet.env: %v", err), "")
	case err != nil:
		return env, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return env, nil
}

// checkSubnets fails CHECK for a container whose addresses came from a
// subnet this host no longer has: after the host moved to another subnet
// (its lease lost to another host), the pod keeps an address and a gateway
// that are no longer routed to this host, and only recreating it mends that.
// Per family, the saved ranges must hold subnet.env's subnet if they hold
// any subnet of that family; a family the saved configuration has no range
// of (another IPAM plugin, a network made dual-stack since) is not compared.
// The code is ErrInternal (999), the one delegates' failed CHECKs carry.
func checkSubnets(containerID, saved string, d map[string]any, subnetFile string, env subnetenv.Env) error {
	had := savedSubnets(d)
	for _, fam := range []struct {
		key string
		sn  netip.Prefix
	}{
		{"FLANNEL_SUBNET", env.Subnet},
		{"FLANNEL_IPV6_SUBNET", env.IPv6Subnet},
	} {
		if !fam.sn.IsValid() {
			continue
		}
		now := fam.sn.Masked()
		found := false
		var other []string
		for _, p := range had {
			switch {
			case p == now:
				found = true
			case p.Addr().Is4() == now.Addr().Is4():
				other = append(other, p.String())
			}
		}
		if !found && len(other) > 0 {
			return types.NewError(types.ErrInternal, fmt.Sprintf(
				"container %s has its address from %s (saved in %s), but this host's subnet is now %s (%s in %s): the host moved to another subnet; the pod must be recreated",
				containerID, strings.Join(other, ", "), saved, now, fam.key, subnetFile), "")
		}
	}
	return nil
}

// savedSubnets are the subnets of a saved delegate configuration's ipam
// section, masked: those of its ranges (agentd, recent flannel plugins) and
// its single-range "subnet" (older flannel plugins), whatever the case of
// these keys (see pluginKeys). Values that are not CIDRs are skipped: the
// delegate's own CHECK judges those.
func savedSubnets(d map[string]any) []netip.Prefix {
	d, _ = pluginKeys(d)
	ipam, _ := d["ipam"].(map[string]any)
	var out []netip.Prefix
	add := func(v any) {
		s, _ := v.(string)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	add(ipam["subnet"])
	sets, _ := ipam["ranges"].([]any)
	for _, set := range sets {
		ranges, _ := set.([]any)
		for _, r := range ranges {
			m, _ := r.(map[string]any)
			add(m["subnet"])
		}
	}
	return out
}

// decodeSaved is the delegate configuration saved in path, b, with the keys
// agentd-cni reads spelled as it spells them (see pluginKeys): a file with
// "Type" or "IPMasq" is run and masqueraded as flannel's plugin and bridge
// read it. A key given in two spellings is left as written, its own
// spelling read. It fails with a decoding failure for a file that is no
// JSON object or gives no delegate type.
func decodeSaved(path string, b []byte) (map[string]any, error) {
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration %s: %v", path, err), "")
	}
	d, _ = pluginKeys(d)
	if t, ok := d["type"].(string); !ok || !validPluginName(t) {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration %s: no delegate type", path), "")
	}
	return d, nil
}

// delegateError keeps a delegate's CNI error code and says which delegate
// failed.
func delegateError(d map[string]any, verb string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return &types.Error{Code: te.Code, Msg: fmt.Sprintf("%s %s: %s", d["type"], verb, te.Msg), Details: te.Details}
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s %s: %v", d["type"], verb, err), "")
}
