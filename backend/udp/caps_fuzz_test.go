package udp

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// procStatus writes /proc/<pid>/status as Linux 6.x does (proc_pid_status)
// for a process called comm with the given capability sets, comm escaped
// as proc_task_name escapes it (a newline and a backslash only).
func procStatus(comm string, inh, prm, eff, bnd, amb uint64) string {
	comm = strings.NewReplacer("\\", `\\`, "\n", `\n`).Replace(comm)
	return fmt.Sprintf("Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nNgid:\t0\nPid:\t812\nPPid:\t1\nTracerPid:\t0\n"+
		"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t \nNStgid:\t812\nNSpid:\t812\nNSpgid:\t812\nNSsid:\t812\nKthread:\t0\n"+
		"VmPeak:\t 1239676 kB\nVmRSS:\t   41020 kB\nThreads:\t9\nSigQ:\t0/63419\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"+
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\tfffffffd7fc1feff\n"+
		"CapInh:\t%016x\nCapPrm:\t%016x\nCapEff:\t%016x\nCapBnd:\t%016x\nCapAmb:\t%016x\n"+
		"NoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\nSpeculation_Store_Bypass:\tthread vulnerable\n"+
		"Cpus_allowed:\t3\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t0\n",
		comm, inh, prm, eff, bnd, amb)
}

// FuzzPermittedCaps: permittedCaps, which tells a keeper with capabilities
// this agent lacks (capsBeyondOurs) by the CapPrm line of its
// /proc/<pid>/status, reads from a status file as the kernel writes it
// exactly the permitted set, whatever the process calls itself (a name
// holding "\nCapPrm:\t…" included: the kernel escapes it). Whatever the
// file holds, what it reads is the value on the first line that begins
// with "CapPrm:", in hex.
func FuzzPermittedCaps(f *testing.F) {
	f.Add("agentd", uint64(0x3000), uint64(0x1ffffffffff), "")
	f.Add("flanneld", uint64(0), uint64(0x1ffffffffff), "CapPrm:\t000001ffffffffff\n")
	f.Add("x\nCapPrm:\t0", uint64(0x1000), uint64(0x3000), "Name:\tx\nCapPrm:\n")
	f.Add(`a\nCapPrm:`, uint64(1), uint64(1), "CapPrm: 10000000000000000\nCapPrm:\t1\n")
	f.Add("kworker/0:1-events", uint64(0x1ffffffffff), uint64(0), "CapPrm:\t+1f\n")
	f.Add("", uint64(0), uint64(0), "CapPrm:\t0x10\r\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, comm string, prm, others uint64, raw string) {
		status := filepath.Join(dir, "status")
		if strings.Contains(comm, "\x00") {
			return // a name ends at its first NUL
		}
		if err := os.WriteFile(status, []byte(procStatus(comm, others, prm, prm&others, ^others, 0)), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, ok := permittedCaps(status); !ok || got != prm {
			t.Fatalf("permittedCaps of the status of %q with CapPrm %016x = %#x, %v", comm, prm, got, ok)
		}

		if err := os.WriteFile(status, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		got, ok := permittedCaps(status)
		if !ok {
			return
		}
		var first string
		found := false
		for _, l := range strings.Split(raw, "\n") {
			if v, is := strings.CutPrefix(l, "CapPrm:"); is {
				first, found = v, true
				break
			}
		}
		digits := strings.TrimLeft(strings.ToLower(strings.TrimSpace(first)), "0")
		if !found || digits != strings.TrimLeft(strconv.FormatUint(got, 16), "0") {
			t.Fatalf("permittedCaps(%q) = %#x, not the first CapPrm line's value (%q)", raw, got, first)
		}
	})
}
