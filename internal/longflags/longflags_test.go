package longflags

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestNormalize(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("etcd-endpoints", "", "")
	fs.Bool("ip-masq", false, "")
	fs.IntP("v", "v", 0, "")
	fs.BoolP("help", "h", false, "")
	tests := []struct{ in, want string }{
		{"-etcd-endpoints x", "--etcd-endpoints x"},
		{"-etcd-endpoints=x -ip-masq sub", "--etcd-endpoints=x --ip-masq sub"},
		{"-etcd-endpoints -x -ip-masq", "--etcd-endpoints -x --ip-masq"},
		{"-v 2 -v2 -v=2 -hv 3 -h", "-v 2 -v2 -v=2 -hv 3 -h"},
		{"-vmodule=x", "-vmodule=x"}, // a group of -v: pflag reports it
		{"-unknown x", "--unknown x"},
		{"- -- -etcd-endpoints x", "- -- -etcd-endpoints x"},
		{"-etcd-endpoints", "--etcd-endpoints"},
	}
	for _, tt := range tests {
		if got := strings.Join(Normalize(fs, strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestNextStepwise: a caller can change the flags between steps, as agentctl
// does at a subcommand's name.
func TestNextStepwise(t *testing.T) {
	root := pflag.NewFlagSet("root", pflag.ContinueOnError)
	root.String("etcd-prefix", "", "")
	sub := pflag.NewFlagSet("sub", pflag.ContinueOnError)
	sub.AddFlagSet(root)
	sub.StringP("output", "o", "", "")

	args := strings.Fields("-etcd-prefix /x sub -output json -oyaml -- -output")
	var out []string
	fs := root
	for i := 0; i < len(args); {
		if args[i] == "sub" {
			fs = sub
		}
		var next []string
		next, i = Next(fs, args, i)
		out = append(out, next...)
	}
	if got, want := strings.Join(out, " "), "--etcd-prefix /x sub --output json -oyaml -- -output"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
