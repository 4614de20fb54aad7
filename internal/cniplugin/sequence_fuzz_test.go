package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testtmp"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// The attachments FuzzSequence plays with: two containers, two interfaces
// and two networks sharing one dataDir.
var (
	seqNetworks   = [2]string{"cbr0", "other"}
	seqContainers = [2]string{"c1", "c2"}
	seqInterfaces = [2]string{"eth0", "eth1"}
)

// The operations of a FuzzSequence input, two bytes each: the first byte's
// value modulo seqOps picks the operation (its bits above the third pick the
// crash step of seqCrashedAdd), the second's low three bits the attachment
// (network, container, interface), its fourth bit for seqDel a DEL in the
// configuration of the twin's last ADD (see del), and, for seqFlannelDel, its
// low bit the container.
const (
	seqAdd = iota
	seqDel
	seqCheck
	seqFlannelDel
	seqMoveSubnet
	seqCrashedAdd
	seqOps
)

// seqMaxOps is the most operations of a FuzzSequence input played, the
// rest left out: 16 (24 before) with the seeds' 8 at most. An operation and
// the end's DELs cost about as much, so the input's cost is bounded too.
const seqMaxOps = 16

// seqEnvs are the subnet.env contents seqMoveSubnet switches between.
var seqEnvs = [2]string{envA, strings.Replace(envA, "10.244.5.1/24", "10.244.9.1/24", 1)}

// seqState is what FuzzSequence knows about one attachment.
type seqState struct {
	// live: the attachment's last ADD finished; conf is what it gave the
	// delegate, env the subnet.env it read (an index in seqEnvs).
	live bool
	conf string
	env  int
	// crashed: its last ADDs stopped in the middle (the crash hook), with
	// these tags. DEL may then use the configuration of one of them, or
	// of the ADD before them (conf, if wasLive), or, if it was not live
	// before, one rebuilt from subnet.env.
	crashed []string
	wasLive bool
}

// seqAttachment names attachment i of the 8.
func seqAttachment(i byte) (network, id, ifName string) {
	return seqNetworks[i>>2&1], seqContainers[i>>1&1], seqInterfaces[i&1]
}

// FuzzSequence plays random sequences of ADD, DEL and CHECK of eight
// attachments (two containers, two interfaces, two networks sharing
// dataDir), of flannel's plugin's DEL after a rollback (dataDir/<container
// ID> read, decoded, removed), of subnet.env moving to another subnet, and of
// ADDs ended by a crash after any step of their saving, over a dataDir that
// may start with a legacy file of flannel's for either container. After each
// step:
//
//   - a live attachment's file holds what its ADD gave the delegate;
//   - the container's legacy file, when there, is a live (or crashed)
//     attachment's file of the same container, the same file, or the
//     untouched legacy file of flannel's it started with;
//   - DEL of a live attachment runs the delegate with what its ADD gave it;
//     DEL of any other never with a live attachment's configuration (one
//     rebuilt from subnet.env, or a legacy file of flannel's, which serves
//     whichever attachment of its network comes first), except with its
//     twin's, the same container and interface in the other network, whose
//     file it takes as a renamed network's (see renamedSaved); a DEL in the
//     configuration of the twin's last ADD (as after a rename of the
//     twin's network) takes the file of a live twin added in the subnet
//     subnet.env names, after its own file if it has one (releaseRenamed);
//     before 2026-12-07 every DEL was tagged "rebuilt", which no ADD's
//     file matches, and neither was ever played;
//   - CHECK of a live attachment passes with its own configuration while
//     subnet.env names the subnet it was added in, and fails before any
//     delegate runs once it names another;
//   - flannel's plugin decodes the legacy file.
//
// In the end, DEL of every attachment empties dataDir, with a second round
// of them where the first left a file.
func FuzzSequence(f *testing.F) {
	op := func(o, arg byte) []byte { return []byte{o, arg} }
	seq := func(ops ...[]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	const (
		cbr0c1eth0  = 0
		cbr0c1eth1  = 1
		cbr0c2eth0  = 2
		otherc1eth0 = 4
	)
	crashAt := func(step byte) byte { return seqCrashedAdd | step<<3 }
	// No legacy files to start with (first byte 0), or flannel's for c1
	// in cbr0 (1), for c2 in other (2), or both (3).
	f.Add(byte(0), seq(op(seqAdd, cbr0c1eth0), op(seqFlannelDel, 0), op(seqDel, cbr0c1eth0)))
	f.Add(byte(0), seq(op(seqAdd, cbr0c1eth0), op(seqAdd, cbr0c1eth1), op(seqAdd, otherc1eth0),
		op(seqDel, cbr0c1eth1), op(seqDel, cbr0c1eth1), op(seqCheck, cbr0c1eth0), op(seqDel, cbr0c1eth0), op(seqAdd, cbr0c1eth1)))
	f.Add(byte(0), seq(op(seqAdd, cbr0c1eth0), op(seqMoveSubnet, 0), op(seqAdd, cbr0c1eth0), op(seqCheck, cbr0c1eth0), op(seqFlannelDel, 0)))
	f.Add(byte(1), seq(op(seqAdd, cbr0c1eth1), op(seqDel, cbr0c1eth1), op(seqDel, cbr0c1eth1), op(seqCheck, cbr0c1eth0)))
	f.Add(byte(2), seq(op(seqAdd, cbr0c2eth0), op(seqDel, cbr0c2eth0), op(seqFlannelDel, 1)))
	// DELs of cbr0:c1:eth0 as if other, where c1's eth0 was added, had
	// been renamed cbr0 (see del).
	f.Add(byte(0), seq(op(seqAdd, otherc1eth0), op(seqDel, cbr0c1eth0|8), op(seqCheck, otherc1eth0)))
	f.Add(byte(0), seq(op(seqAdd, otherc1eth0), op(seqAdd, cbr0c1eth0), op(seqDel, cbr0c1eth0|8), op(seqAdd, cbr0c1eth0)))
	f.Add(byte(1), seq(op(seqAdd, otherc1eth0), op(seqMoveSubnet, 0), op(seqDel, cbr0c1eth0|8), op(seqMoveSubnet, 0), op(seqDel, cbr0c1eth0|8)))
	f.Add(byte(0), seq(op(crashAt(1), otherc1eth0), op(seqDel, cbr0c1eth0|8), op(seqDel, otherc1eth0)))
	for step := range byte(3) {
		f.Add(byte(0), seq(op(seqAdd, cbr0c1eth0), op(seqAdd, cbr0c1eth1), op(seqMoveSubnet, 0),
			op(crashAt(step), cbr0c1eth0), op(seqDel, cbr0c1eth0), op(seqDel, cbr0c1eth1), op(seqDel, cbr0c1eth1)))
		f.Add(byte(3), seq(op(crashAt(step), cbr0c1eth0), op(seqAdd, cbr0c1eth0), op(seqFlannelDel, 0)))
	}
	f.Fuzz(func(t *testing.T, legacy byte, ops []byte) {
		if len(ops) > 2*seqMaxOps {
			ops = ops[:2*seqMaxOps]
		}
		fx := newFixtureIn(t, testtmp.Dir(t))
		env := 0
		fx.writeEnv(t, seqEnvs[env])
		if err := os.MkdirAll(fx.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}

		// flannel's legacy files, for eth0 in the network they name.
		flannels := map[string]fs.FileInfo{}
		flannelConf := map[string]string{}
		for i, id := range seqContainers {
			if legacy>>i&1 == 0 {
				continue
			}
			conf := `{"cniVersion":"0.3.1","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"type":"host-local"},"mtu":1450,"name":"` + seqNetworks[i] + `","type":"bridge","tag":"flannel ` + id + `"}`
			path := filepath.Join(fx.dataDir, id)
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			flannels[id], flannelConf[id] = fi, canonical(t, []byte(conf))
		}

		var state [8]seqState
		gen := 0
		args := func(i byte, tag, extra string) *skel.CmdArgs {
			network, id, ifName := seqAttachment(i)
			conf := `{"cniVersion":"1.0.0","name":"` + network + `","type":"agentd-cni","subnetFile":"` + fx.subnetFile + `","dataDir":"` + fx.dataDir + `","subnetFileWait":"0s","delegate":{"tag":"` + tag + `"}` + extra + `}`
			return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/x", IfName: ifName, StdinData: []byte(conf)}
		}
		path := func(i byte) string {
			network, id, ifName := seqAttachment(i)
			return filepath.Join(fx.dataDir, network+":"+id+":"+ifName)
		}
		lastCall := func(what string) fakeCall {
			t.Helper()
			if len(fx.exec.calls) == 0 {
				t.Fatalf("%s: no delegate ran", what)
			}
			return fx.exec.calls[len(fx.exec.calls)-1]
		}
		var log []string
		fail := func(format string, a ...any) {
			t.Helper()
			t.Fatalf("after\n  %s\n%s", strings.Join(log, "\n  "), fmt.Sprintf(format, a...))
		}

		add := func(i byte, crashStep int) {
			s := &state[i]
			gen++
			network, id, ifName := seqAttachment(i)
			tag := fmt.Sprintf("%s:%s:%s #%d", network, id, ifName, gen)
			steps := 0
			fx.p.crash = func(string) bool {
				steps++
				return crashStep > 0 && steps == crashStep
			}
			calls := len(fx.exec.calls)
			err := fx.p.Add(args(i, tag, ""))
			fx.p.crash = nil
			if errors.Is(err, errCrashed) {
				if len(fx.exec.calls) != calls {
					fail("ADD crashed after step %d and still ran a delegate", crashStep)
				}
				if s.crashed == nil {
					s.wasLive = s.live
				}
				s.crashed, s.live = append(s.crashed, tag), false
				return
			}
			if err != nil {
				fail("ADD %s: %v", tag, err)
			}
			c := lastCall("ADD")
			if c.command != "ADD" {
				fail("ADD %s ran %s", tag, c.command)
			}
			*s = seqState{live: true, conf: canonical(t, c.stdin), env: env}
		}

		// tagOf is the tag of a configuration the delegate got.
		tagOf := func(conf string) string {
			var d struct{ Tag string }
			json.Unmarshal([]byte(conf), &d)
			return d.Tag
		}
		// twinOf reports whether conf is what an ADD gave, or may have
		// saved for, attachment i's twin (the same container and
		// interface in the other network), which DEL of i takes when i
		// has nothing saved (see renamedSaved).
		twinOf := func(i byte, tw seqState, conf string) bool {
			twinNetwork, _, _ := seqAttachment(i ^ 4)
			return tw.live && conf == tw.conf || slices.Contains(tw.crashed, tagOf(conf)) && strings.Contains(conf, `"name":"`+twinNetwork+`"`) || tw.crashed != nil && tw.wasLive && conf == tw.conf
		}
		// del runs DEL of attachment i with the delegate tagged
		// "rebuilt" or, asTwin, with the tag of its twin's last ADD:
		// the configuration that ADD saved is then what i's network
		// gives today, but for the name, as after the network was
		// renamed: while subnet.env names the subnet it was added in,
		// DEL of i takes the twin's file when i has none (see
		// renamedSaved), and releases it after its own when i has one
		// (see releaseRenamed), a second run of the delegate.
		del := func(i byte, asTwin bool) {
			s := &state[i]
			network, id, _ := seqAttachment(i)
			delTag := "rebuilt"
			if tw := state[i^4]; asTwin && len(tw.crashed) > 0 {
				delTag = tw.crashed[len(tw.crashed)-1]
			} else if asTwin && tw.live {
				delTag = tagOf(tw.conf)
			}
			twinBefore := state[i^4]
			calls := len(fx.exec.calls)
			if err := fx.p.Del(args(i, delTag, "")); err != nil {
				fail("DEL %s: %v", path(i), err)
			}
			if len(fx.exec.calls) == calls {
				fail("DEL %s: no delegate ran", path(i))
			}
			c := fx.exec.calls[calls]
			got := canonical(t, c.stdin)
			if c.command != "DEL" {
				fail("DEL %s ran %s", path(i), c.command)
			}
			gotTag := tagOf(got)
			twin := !s.live && twinOf(i, twinBefore, got)
			switch {
			case twin:
				state[i^4] = seqState{}
			case s.live:
				if got != s.conf {
					fail("DEL of live %s gave the delegate\n%s\nits ADD gave it\n%s", path(i), got, s.conf)
				}
			case s.crashed != nil:
				ok := slices.Contains(s.crashed, gotTag) || s.wasLive && got == s.conf || !s.wasLive && gotTag == delTag
				if !ok {
					fail("DEL of %s after crashed ADDs %q (before them %q, live %v) gave the delegate\n%s", path(i), s.crashed, tagOf(s.conf), s.wasLive, got)
				}
			default:
				if gotTag != delTag && !(gotTag == "flannel "+id && flannelConf[id] != "" && strings.Contains(got, `"name":"`+network+`"`)) {
					fail("DEL of %s, not live, gave the delegate\n%s\nwant one rebuilt from subnet.env or flannel's legacy file", path(i), got)
				}
			}
			if gotTag == "flannel "+id {
				// Taken and removed.
				delete(flannels, id)
			}
			*s = seqState{}
			for _, c := range fx.exec.calls[calls+1:] {
				if again := canonical(t, c.stdin); c.command != "DEL" || twin || !twinOf(i, twinBefore, again) {
					fail("DEL of %s also ran the delegate's %s with\n%s\nwhich is not its twin's", path(i), c.command, again)
				}
				state[i^4] = seqState{}
			}
			if asTwin && twinBefore.live && twinBefore.env == env && state[i^4].live {
				fail("DEL of %s in the configuration of its twin's ADD, in the same subnet, left the twin's file", path(i))
			}
		}

		check := func(i byte) {
			s := state[i]
			calls := len(fx.exec.calls)
			prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
			err := fx.p.Check(args(i, "check", prev))
			if !s.live {
				return
			}
			if s.env != env {
				var te *types.Error
				if !errors.As(err, &te) || te.Code != types.ErrInternal || len(fx.exec.calls) != calls {
					fail("CHECK of live %s after the subnet moved: %v, want code %d and no delegate run", path(i), err, types.ErrInternal)
				}
				return
			}
			if err != nil {
				fail("CHECK of live %s: %v", path(i), err)
			}
			var d map[string]any
			if err := json.Unmarshal(lastCall("CHECK").stdin, &d); err != nil {
				t.Fatal(err)
			}
			delete(d, "prevResult")
			if got := canonical(t, jsonBytes(t, d)); got != s.conf {
				fail("CHECK of live %s gave the delegate\n%s\nits ADD gave it\n%s", path(i), got, s.conf)
			}
		}

		flannelDel := func(id string) {
			legacy := filepath.Join(fx.dataDir, id)
			b, err := os.ReadFile(legacy)
			if errors.Is(err, fs.ErrNotExist) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var nc types.NetConf
			if err := json.Unmarshal(b, &nc); err != nil || nc.Type != "bridge" {
				fail("flannel's plugin cannot use %s (%v): %s", legacy, err, b)
			}
			if err := os.Remove(legacy); err != nil {
				t.Fatal(err)
			}
			delete(flannels, id)
		}

		invariants := func() {
			t.Helper()
			for i := range byte(8) {
				if !state[i].live {
					continue
				}
				b, err := os.ReadFile(path(i))
				if err != nil || canonical(t, b) != state[i].conf {
					fail("live %s holds %q (%v), want\n%s", path(i), b, err, state[i].conf)
				}
			}
			for _, id := range seqContainers {
				legacy := filepath.Join(fx.dataDir, id)
				fi, err := os.Stat(legacy)
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if flannels[id] != nil && os.SameFile(fi, flannels[id]) {
					continue
				}
				owner := false
				for i := range byte(8) {
					if _, aid, _ := seqAttachment(i); aid != id || !state[i].live && state[i].crashed == nil {
						continue
					}
					if sameFile(legacy, path(i)) {
						owner = true
					}
				}
				if !owner {
					b, _ := os.ReadFile(legacy)
					fail("legacy file %s is no live attachment's file of its container, nor flannel's: %s", legacy, b)
				}
			}
		}

		for k := 0; k+1 < len(ops); k += 2 {
			o, arg := ops[k], ops[k+1]
			i := arg & 7
			switch o % seqOps {
			case seqAdd:
				log = append(log, "ADD "+path(i))
				add(i, 0)
			case seqDel:
				asTwin := arg&8 != 0
				log = append(log, "DEL "+path(i)+map[bool]string{true: " as its twin was added"}[asTwin])
				del(i, asTwin)
			case seqCheck:
				log = append(log, "CHECK "+path(i))
				check(i)
			case seqFlannelDel:
				id := seqContainers[arg&1]
				log = append(log, "flannel's DEL "+id)
				flannelDel(id)
			case seqMoveSubnet:
				env = 1 - env
				log = append(log, "subnet.env: "+strings.Split(seqEnvs[env], "\n")[1])
				fx.writeEnv(t, seqEnvs[env])
			case seqCrashedAdd:
				step := int(o>>3)%3 + 1
				log = append(log, fmt.Sprintf("ADD %s crashed after step %d", path(i), step))
				add(i, step)
			}
			invariants()
		}
		for round := range 2 {
			for i := range byte(8) {
				log = append(log, fmt.Sprintf("DEL %s (end, round %d)", path(i), round+1))
				del(i, false)
				invariants()
			}
			// A second round only where the first left a file (a
			// legacy file of flannel's, which the first round's DEL
			// of a live attachment of its container does not take):
			// over an empty dataDir, with nothing live or crashed,
			// each DEL is the same whatever the input was.
			if ents, err := os.ReadDir(fx.dataDir); err == nil && len(ents) == 0 {
				break
			}
		}
		if ents, err := os.ReadDir(fx.dataDir); err != nil || len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			fail("after every attachment's DEL, dataDir holds %q (%v)", names, err)
		}
	})
}

// canonical is JSON b decoded and encoded again, keys sorted.
func canonical(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return string(jsonBytes(t, v))
}

func jsonBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
