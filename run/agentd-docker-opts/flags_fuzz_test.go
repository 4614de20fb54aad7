package main

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParseFlags: any command line is either refused with a one-line
// message, or gives --help, or options with a wait that is not negative and
// a subnet file that is not empty;
// written back as flags (and dockerd's arguments after "--", when there was
// a "--"), those options parse to themselves.
//
// args is split at newlines into arguments.
func FuzzParseFlags(f *testing.F) {
	for _, s := range []string{"", "--wait=60s\n--output=/run/flannel/docker-network.env", "-o\n-\n--subnet-file\n/x/subnet.env",
		"--wait=-1s", "--wait", "extra", "-h", "--help=false\n--wait=1h1m", "--subnet-file=\n--", "-o=", "--bogus", "--docker-config=", "--docker-config\n/etc/docker/daemon.json",
		"--wait=1m\n--\n-D\n--config-file\n/etc/docker/custom.json", "--", "x\n--\n--wait=1s", "--\n--\n-h", "--bridge=\n--bridge\nbr0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, argText string) {
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\n")
		}
		o, usage, err := parseFlags(args)
		switch {
		case err != nil:
			// The arguments hold no newline (they were split at them), so
			// neither may the message.
			if msg := err.Error(); msg == "" || strings.Contains(msg, "\n") {
				t.Fatalf("parseFlags(%q): error %q, want one non-empty line", args, msg)
			}
			return
		case usage != "":
			if !strings.HasPrefix(usage, "Usage: agentd-docker-opts") {
				t.Fatalf("parseFlags(%q): help %q", args, usage)
			}
			return
		}
		if o.wait < 0 {
			t.Fatalf("parseFlags(%q): negative wait %v accepted", args, o.wait)
		}
		if o.subnetFile == "" {
			t.Fatalf("parseFlags(%q): empty --subnet-file accepted", args)
		}
		again := []string{"--subnet-file=" + o.subnetFile, "--output=" + o.output, "--wait=" + o.wait.String(), "--docker-config=" + o.dockerConfig, "--bridge=" + o.bridge}
		if o.dockerdArgs != nil {
			again = append(append(again, "--"), o.dockerdArgs...)
		}
		o2, usage, err := parseFlags(again)
		if err != nil || usage != "" || !reflect.DeepEqual(o2, o) {
			t.Fatalf("parseFlags(%q) = %+v; written back as %q it parses to %+v, %q, %v", args, o, again, o2, usage, err)
		}
	})
}
