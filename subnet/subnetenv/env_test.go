package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	envV4 = Env{
		Network: mustPrefix("10.244.0.0/16"),
		Subnet:  mustPrefix("10.244.5.1/24"),
		MTU:     1450,
	}
	envDual = Env{
		Network:     mustPrefix("10.244.0.0/16"),
		Subnet:      mustPrefix("10.244.5.1/24"),
		MTU:         1400,
		IPMasq:      true,
		IPv6Network: mustPrefix("fc00::/48"),
		IPv6Subnet:  mustPrefix("fc00:0:0:5::1/64"),
	}
)

var envV4WithHost = func() Env { e := envV4; e.HostID = "1cd32dbd72c57f3fd38b56cfc433518d"; return e }()

const (
	envV4Text   = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	envDualText = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n" +
		"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\n"
)

func TestWriteFormat(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		e    Env
		want string
	}{
		{envV4, envV4Text},
		{envDual, envDualText},
		{envV4WithHost, envV4Text + "AGENTD_HOST_ID=1cd32dbd72c57f3fd38b56cfc433518d\n"},
	} {
		path := filepath.Join(dir, "run", "flannel", "subnet.env")
		if err := Write(path, tc.e); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("wrote\n%s\nwant\n%s", b, tc.want)
		}
		got, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.e {
			t.Errorf("Read = %+v, want %+v", got, tc.e)
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "subnet.env")
	if err := Write(path, envDual); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, envV4); err != nil { // replace
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "subnet.env" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only subnet.env", names)
	}
	if b, _ := os.ReadFile(path); string(b) != envV4Text {
		t.Errorf("content after replace:\n%s", b)
	}
}

func TestWriteRejectsInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	for _, tc := range []struct {
		mod  func(*Env)
		want string
	}{
		{func(e *Env) { e.Network = netip.Prefix{} }, "subnet.env: FLANNEL_NETWORK missing"},
		{func(e *Env) { e.Subnet = netip.Prefix{} }, "subnet.env: FLANNEL_SUBNET missing"},
		{func(e *Env) { e.MTU = 0 }, "subnet.env: FLANNEL_MTU 0 is out of range [68, 65535]"},
		{func(e *Env) { e.Subnet = mustPrefix("10.244.5.0/24") },
			"subnet.env: FLANNEL_SUBNET 10.244.5.0/24 is a network address; want a host address such as 10.244.5.1/24"},
		{func(e *Env) { e.IPv6Subnet = netip.Prefix{} }, "subnet.env: FLANNEL_IPV6_SUBNET missing: the IPv6 keys come in pairs"},
		{func(e *Env) { e.IPv6Network = mustPrefix("10.0.0.0/8") }, "subnet.env: FLANNEL_IPV6_NETWORK 10.0.0.0/8 is not an IPv6 CIDR"},
	} {
		e := envDual
		tc.mod(&e)
		err := Write(path, e)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Write(%+v) = %v, want %s", e, err, tc.want)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an invalid Env left a file behind: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.env")
	if _, err := Read(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want os.ErrNotExist", err)
	}
	path := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(path, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read(path)
	if want := "subnet.env " + path + ": FLANNEL_SUBNET missing"; err == nil || err.Error() != want {
		t.Errorf("Read = %v, want %s", err, want)
	}
}

func TestParseTolerant(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       Env
	}{
		{"ours", envV4Text, envV4},
		{"dual-stack", envDualText, envDual},
		{"flannel's order (IPv6 before MTU)", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n" +
			"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n", envDual},
		{"comments, blank lines, CRLF, spaces, quotes, export, unknown keys",
			"# written by hand\r\n\r\n  FLANNEL_NETWORK = \"10.244.0.0/16\"\r\nexport FLANNEL_SUBNET='10.244.5.1/24'\r\n" +
				"OTHER=thing\r\nFLANNEL_MTU=1450\r\n\t# FLANNEL_MTU=9000\r\nFLANNEL_IPMASQ=FALSE", envV4},
		{"no IPMASQ, empty IPv6 keys", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n" +
			"FLANNEL_IPV6_NETWORK=\nFLANNEL_IPV6_SUBNET=\"\"\n", envV4},
		{"last value wins", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n", envV4},
		{"agentd's host identity", envV4Text + "AGENTD_HOST_ID=1cd32dbd72c57f3fd38b56cfc433518d\n", envV4WithHost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const base = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n"
	for _, tc := range []struct {
		text, want string
	}{
		{"", "subnet.env: FLANNEL_NETWORK missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n", "subnet.env: FLANNEL_MTU missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=\nFLANNEL_MTU=1450\n", "subnet.env: FLANNEL_SUBNET missing"},
		{base + "garbage\n", `subnet.env: line 4: "garbage" is not KEY=VALUE`},
		{base + "FLANNEL_MTU=big\n", `subnet.env: line 4: FLANNEL_MTU "big" is not a number`},
		{base + "FLANNEL_MTU=20\n", `subnet.env: FLANNEL_MTU 20 is out of range [68, 65535]`},
		{base + "FLANNEL_IPMASQ=maybe\n", `subnet.env: line 4: FLANNEL_IPMASQ "maybe" is not true or false`},
		{base + "FLANNEL_SUBNET=10.244.5.1\n", `subnet.env: line 4: FLANNEL_SUBNET "10.244.5.1" is not a CIDR: netip.ParsePrefix("10.244.5.1"): no '/'`},
		{base + "FLANNEL_SUBNET=10.245.5.1/24\n", `subnet.env: FLANNEL_SUBNET 10.245.5.1/24 is not inside FLANNEL_NETWORK 10.244.0.0/16`},
		{base + "FLANNEL_SUBNET=10.244.5.1/8\n", `subnet.env: FLANNEL_SUBNET 10.244.5.1/8 is not inside FLANNEL_NETWORK 10.244.0.0/16`},
		{base + "FLANNEL_SUBNET=fc00::1/64\n", `subnet.env: FLANNEL_SUBNET fc00::1/64 is not an IPv4 CIDR`},
		{base + "FLANNEL_NETWORK=10.244.1.0/16\n", `subnet.env: FLANNEL_NETWORK 10.244.1.0/16 has host bits set`},
		{base + "FLANNEL_IPV6_NETWORK=fc00::/48\n", `subnet.env: FLANNEL_IPV6_SUBNET missing: the IPv6 keys come in pairs`},
		{base + "FLANNEL_IPV6_SUBNET=fc00::1/64\n", `subnet.env: FLANNEL_IPV6_NETWORK missing: the IPv6 keys come in pairs`},
		{base + "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc01::1/64\n", `subnet.env: FLANNEL_IPV6_SUBNET fc01::1/64 is not inside FLANNEL_IPV6_NETWORK fc00::/48`},
		{base + "AGENTD_HOST_ID=xyz\n", `subnet.env: line 4: AGENTD_HOST_ID: host id must be 32 hex digits, got 3 characters`},
	} {
		_, err := Parse([]byte(tc.text))
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q)\n got %v\nwant %s", tc.text, err, tc.want)
		}
	}
}

// TestParseComplete: the CNI plugin's reading refuses what Parse
// tolerates where the file may have been cut or trimmed: no newline at the
// end, FLANNEL_IPMASQ missing or empty. Everything else is Parse's.
func TestParseComplete(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{envV4Text, ""},
		{envDualText, ""},
		{envV4Text + "AGENTD_HOST_ID=1cd32dbd72c57f3fd38b56cfc433518d\n", ""},
		{"# hand-written\r\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\r\nFLANNEL_SUBNET=10.244.5.1/24\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=FALSE\r\n", ""},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=145",
			`subnet.env: line 3: "FLANNEL_MTU=145" does not end with a newline: the file looks truncated (agentd and flanneld end every line with one)`},
		{strings.TrimSuffix(envV4Text, "\n"), `subnet.env: line 4: "FLANNEL_IPMASQ=false" does not end with a newline: the file looks truncated (agentd and flanneld end every line with one)`},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n", "subnet.env: FLANNEL_IPMASQ missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=\n", "subnet.env: FLANNEL_IPMASQ missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=''\n", "subnet.env: FLANNEL_IPMASQ missing"},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=no\n", `subnet.env: line 4: FLANNEL_IPMASQ "no" is not true or false`},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_IPMASQ=true\n", "subnet.env: FLANNEL_MTU missing"},
		{"", "subnet.env: FLANNEL_NETWORK missing"},
	} {
		got, err := ParseComplete([]byte(tc.text))
		if tc.want == "" {
			if want, lerr := Parse([]byte(tc.text)); err != nil || lerr != nil || got != want {
				t.Errorf("ParseComplete(%q) = %+v, %v; want Parse's %+v, %v", tc.text, got, err, want, lerr)
			}
			continue
		}
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseComplete(%q)\n got %v\nwant %s", tc.text, err, tc.want)
		}
	}
}

// TestParseCompleteCut: every proper prefix of what Write writes that
// cuts a line (a key or a value) is refused; one that ends at a line
// boundary is refused too unless it lost only optional lines (the IPv6 pair
// together, AGENTD_HOST_ID), and then reads as the file without them, never
// with another value.
func TestParseCompleteCut(t *testing.T) {
	full := envDual
	full.HostID = "1cd32dbd72c57f3fd38b56cfc433518d"
	for _, e := range []Env{envV4, envDual, envV4WithHost, full} {
		b, err := format(e)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ParseComplete(b); err != nil || got != e {
			t.Fatalf("ParseComplete(%q) = %+v, %v; want %+v", b, got, err, e)
		}
		for i := 1; i < len(b); i++ {
			cut := b[:i]
			got, err := ParseComplete(cut)
			if cut[i-1] != '\n' {
				if err == nil {
					t.Errorf("ParseComplete(%q), cut inside a line, = %+v, want an error", cut, got)
				}
				continue
			}
			if err != nil {
				continue
			}
			want := e
			if got.IPv6Network != e.IPv6Network {
				want.IPv6Network, want.IPv6Subnet = netip.Prefix{}, netip.Prefix{}
			}
			if got.HostID != e.HostID {
				want.HostID = ""
			}
			if got != want {
				t.Errorf("ParseComplete(%q), cut at a line boundary, = %+v, want an error or %+v", cut, got, want)
			}
		}
	}
}

func TestReadCompleteErrors(t *testing.T) {
	dir := t.TempDir()
	var pe *fs.PathError
	if _, err := read(filepath.Join(dir, "nope.env"), true); !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) {
		t.Errorf("read(missing) = %v, want an *fs.PathError matching fs.ErrNotExist", err)
	}
	if _, err := read(dir, true); !errors.As(err, &pe) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read(a directory) = %v, want an *fs.PathError", err)
	}
	path := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(path, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := read(path, true)
	if want := "subnet.env " + path + ": FLANNEL_IPMASQ missing"; err == nil || err.Error() != want || errors.As(err, &pe) {
		t.Errorf("read(complete) = %v, want %s and no *fs.PathError", err, want)
	}
	if _, err := Read(path); err != nil {
		t.Errorf("Read, which defaults FLANNEL_IPMASQ: %v", err)
	}
}

func TestEnvLeaseSubnet(t *testing.T) {
	if got := envDual.LeaseSubnet(); got != mustPrefix("10.244.5.0/24") {
		t.Errorf("LeaseSubnet() = %s", got)
	}
	if got := (Env{}).LeaseSubnet(); got.IsValid() {
		t.Errorf("zero Env: LeaseSubnet() = %s", got)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
