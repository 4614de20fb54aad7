package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet"
	"github.com/spf13/pflag"
)

// FuzzParseSubnetArg: a subnet argument is either refused with a usage error
// that says something, or is an IPv4 prefix without host bits whose text
// parses back to itself.
func FuzzParseSubnetArg(f *testing.F) {
	for _, s := range []string{"10.244.7.0/24", "10.244.7.1/24", "10.244.7.0/33", "2001:db8::/64", "::ffff:10.0.0.0/104", "0.0.0.0/0", "10.244.7.0", "", "10.244.007.0/24"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sn, err := parseSubnetArg(s)
		if err != nil {
			var u usageError
			if !errors.As(err, &u) || err.Error() == "" {
				t.Fatalf("parseSubnetArg(%q): error %q is not a usage error with a message", s, err)
			}
			return
		}
		if !sn.Addr().Is4() || sn != sn.Masked() {
			t.Fatalf("parseSubnetArg(%q) = %s: not a masked IPv4 prefix", s, sn)
		}
		again, err := parseSubnetArg(sn.String())
		if err != nil || again != sn {
			t.Fatalf("parseSubnetArg(%q) = %s, which parses back to %s, %v", s, sn, again, err)
		}
	})
}

// FuzzParseReleaseArg: lease release's argument is either refused with a
// usage error that says something, or names an IPv4 subnet (exactly what
// parseSubnetArg gives, so every argument release took before means what it
// meant) or exactly one key, whose canonical name parses back to it, or a
// key's name that is not canonical, as it was given, or a whole key with no
// "/subnets/" but "/subnets" in it, as it was given; each target, written
// as leases shows it (keyArg), as a key's name or as a whole key, parses
// back to itself.
func FuzzParseReleaseArg(f *testing.F) {
	for _, s := range []string{"10.244.7.0/24", "10.244.7.0/24&fd00:0:0:7::/64", "10.244.7.0-24", "10.244.7.0-24&fd00:0:0:7::-64",
		"/coreos.com/network/subnets/10.244.7.0-24&fd00:0:0:7::-64", "/a/subnets/b/subnets/10.244.7.0-24", "/coreos.com/network/subnets/",
		"10.244.7.0/24&fd00:0:0:7::1/64", "10.244.7.0/24&::ffff:10.0.0.0/104", "10.244.7.0/24&", "10.244.7.0/24&fd00::%eth0/64",
		"10.244.7.0-024", "/coreos.com/network/subnets-old/10.244.7.0-24", "10.244.7.0", "10.244.7.1/24&fd00::/64", "-", "&", "/"} {
		f.Add(s)
	}
	const dir = "/coreos.com/network/subnets/"
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := parseReleaseArg(s)
		if old, oldErr := parseSubnetArg(s); oldErr == nil && (err != nil || tg != (releaseTarget{sn: old})) {
			t.Fatalf("parseReleaseArg(%q) = %+v, %v; want the subnet %s, as parseSubnetArg", s, tg, err, old)
		}
		if err != nil {
			var u usageError
			if !errors.As(err, &u) || err.Error() == "" {
				t.Fatalf("parseReleaseArg(%q): error %q is not a usage error with a message", s, err)
			}
			return
		}
		if tg.key != "" && tg.raw == "" && !tg.sn.IsValid() {
			// A whole key release judges knowing the prefix: beside
			// <prefix>/subnets/, perhaps.
			if tg != (releaseTarget{key: s}) || strings.Contains(s, "/subnets/") || !strings.Contains(s, "/subnets") {
				t.Fatalf("parseReleaseArg(%q) = %+v: not the whole key alone, beside a subnets prefix", s, tg)
			}
			return
		}
		if tg.raw != "" {
			if tg.sn.IsValid() || tg.sn6.IsValid() || tg.exact || strings.Contains(tg.raw, "/") && tg.key == "" ||
				!strings.HasSuffix(s, tg.raw) || tg.key != "" && tg.key != s || tg.String() != tg.raw {
				t.Fatalf("parseReleaseArg(%q) = %+v: not the argument's key name alone", s, tg)
			}
			if _, _, err := subnet.ParseSubnetKey(tg.raw); err == nil {
				t.Fatalf("parseReleaseArg(%q) = %+v: a canonical key taken as a name that is not", s, tg)
			}
			if again, err := parseReleaseArg(dir + tg.raw); err != nil || again != (releaseTarget{raw: tg.raw, key: dir + tg.raw}) {
				t.Fatalf("parseReleaseArg(%q) = %+v, and the whole key parses to %+v, %v", s, tg, again, err)
			}
			return
		}
		if !tg.sn.Addr().Is4() || tg.sn != tg.sn.Masked() {
			t.Fatalf("parseReleaseArg(%q) = %+v: not a masked IPv4 subnet", s, tg)
		}
		if !tg.exact && (tg.sn6.IsValid() || tg.key != "") {
			t.Fatalf("parseReleaseArg(%q) = %+v: an IPv6 half or a key, but not exact", s, tg)
		}
		name := subnet.MakeSubnetKey(tg.sn, tg.sn6)
		if sn, sn6, err := subnet.ParseSubnetKey(name); err != nil || sn != tg.sn || sn6 != tg.sn6 {
			t.Fatalf("parseReleaseArg(%q) = %+v, whose key %q parses to %s %s, %v", s, tg, name, sn, sn6, err)
		}
		if tg.key != "" && (tg.key != s || !strings.HasSuffix(s, "/subnets/"+name)) {
			t.Fatalf("parseReleaseArg(%q) = %+v: the key is not the argument, ending in /subnets/%s", s, tg, name)
		}
		for arg, want := range map[string]releaseTarget{
			tg.String(): {sn: tg.sn, sn6: tg.sn6, exact: tg.sn6.IsValid()},
			name:        {sn: tg.sn, sn6: tg.sn6, exact: true},
			dir + name:  {sn: tg.sn, sn6: tg.sn6, exact: true, key: dir + name},
		} {
			if again, err := parseReleaseArg(arg); err != nil || again != want {
				t.Fatalf("parseReleaseArg(%q) = %+v, and %q parses to %+v, %v; want %+v", s, tg, arg, again, err, want)
			}
		}
	})
}

// FuzzFlagsFromEnv: the environment sets the etcd connection flags only,
// AGENTD_ over FLANNELD_ and never over the command line, to the value the
// variable holds; an unusable value is a usage error naming the variable.
//
// env holds NAME=value lines; args the command line, split at newlines.
func FuzzFlagsFromEnv(f *testing.F) {
	f.Add("AGENTD_ETCD_ENDPOINTS=http://198.18.0.254:2379\nFLANNELD_ETCD_PREFIX=/x", "")
	f.Add("FLANNELD_PUBLIC_IP=198.18.0.7\nAGENTD_FORCE=true\nAGENTD_TIMEOUT=1s", "--etcd-prefix=/y")
	f.Add("FLANNELD_ETCD_ENDPOINTS=\"a,b\nAGENTD_ETCD_ENDPOINTS=", "")
	f.Add("AGENTD_ETCD_PREFIX=/a\nFLANNELD_ETCD_PREFIX=/b\nAGENTD_ETCD_PASSWORD=", "--etcd-username=u")
	f.Fuzz(func(t *testing.T, envText, argText string) {
		env := map[string]string{}
		for _, line := range strings.Split(envText, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\n")
		}

		a := &app{out: io.Discard}
		fs := a.rootCommand().PersistentFlags()
		fs.AddFlag(&pflag.Flag{Name: "public-ip", Value: newStringValue(), Usage: "a command's own flag"})
		fs.AddFlag(&pflag.Flag{Name: "force", Value: newStringValue(), Usage: "a command's own flag"})
		fs.SetOutput(io.Discard)
		if fs.Parse(args) != nil {
			return
		}
		before := map[string]string{}
		changed := map[string]bool{}
		fs.VisitAll(func(f *pflag.Flag) { before[f.Name], changed[f.Name] = f.Value.String(), f.Changed })

		err := flagsFromEnv(fs, lookup, nil)
		if err != nil {
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), "ETCD_") {
				t.Fatalf("flagsFromEnv: error %q is not a usage error naming the variable", err)
			}
			return
		}
		isEnvFlag := map[string]bool{}
		for _, name := range envFlags {
			isEnvFlag[name] = true
		}
		fs.VisitAll(func(f *pflag.Flag) {
			got := f.Value.String()
			var val string
			if isEnvFlag[f.Name] && !changed[f.Name] {
				suffix := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
				if v := env["AGENTD_"+suffix]; v != "" {
					val = v
				} else {
					val = env["FLANNELD_"+suffix]
				}
			}
			if val == "" {
				if got != before[f.Name] {
					t.Fatalf("--%s changed from %q to %q without a variable for it", f.Name, before[f.Name], got)
				}
				return
			}
			// What --flag=val on the command line would have given (another
			// app: a command's flags are bound to its app's fields).
			want := (&app{out: io.Discard}).rootCommand().PersistentFlags()
			if err := want.Set(f.Name, val); err != nil {
				t.Fatalf("--%s: the environment's %q was accepted, the flag's is not: %v", f.Name, val, err)
			}
			if w := want.Lookup(f.Name).Value.String(); got != w {
				t.Fatalf("--%s = %q from the environment's %q, want %q", f.Name, got, val, w)
			}
		})
	})
}

// stringValue is a plain pflag.Value for the stand-ins of commands' flags.
type stringValue string

func newStringValue() *stringValue        { return new(stringValue) }
func (s *stringValue) String() string     { return string(*s) }
func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) Type() string       { return "string" }

// FuzzInitDocument: the document config init writes from its flags is JSON
// that holds exactly the values given (any text, as an operator may mistype
// anything; subnet.ParseConfig judges the values later), VNI and Port
// exactly when given (whatever their value: an explicit 0 is not what an
// absent key is), and a --file document from standard input is passed on
// as it is, trimmed.
func FuzzInitDocument(f *testing.F) {
	f.Add("10.244.0.0/16", 0, "", "", "vxlan", false, 0, false, 0, false, "")
	f.Add("10.5.0.0/16", 26, "10.5.1.0", "10.5.9.0", "host-gw", false, 0, false, 0, false, "")
	f.Add("10.244.0.0/16", 0, "", "", "vxlan", true, 7, true, 4789, true, "")
	f.Add("10.244.0.0/16", 0, "", "", "vxlan", true, 0, true, 0, false, "")
	f.Add("10.0.0.0/8\x01\"<&>", 24, "\\", "\u2028", "udp\xff", true, -1, true, 70000, false, "")
	f.Add("", 0, "", "", "vxlan", false, 0, false, 0, false, " {\"Network\":\"10.1.0.0/16\"}\n")
	f.Fuzz(func(t *testing.T, network string, subnetLen int, subnetMin, subnetMax, backend string, vniGiven bool, vni int, portGiven bool, port int, directRouting bool, file string) {
		o := initOptions{network: network, subnetLen: subnetLen, subnetMin: subnetMin, subnetMax: subnetMax,
			backend: backend, vni: vni, port: port, directRouting: directRouting, vniGiven: vniGiven, portGiven: portGiven}
		if file != "" {
			o = initOptions{file: "-", backend: backend}
			doc, err := o.document(strings.NewReader(file))
			if err != nil {
				t.Fatalf("document from stdin: %v", err)
			}
			if want := bytes.TrimSpace([]byte(file)); !bytes.Equal(doc, want) {
				t.Fatalf("document from stdin = %q, want %q", doc, want)
			}
			return
		}
		doc, err := o.document(strings.NewReader(""))
		if network == "" {
			var u usageError
			if err == nil || !errors.As(err, &u) || err.Error() == "" {
				t.Fatalf("document without --network: %v, want a usage error", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("document(%+v): %v", o, err)
		}
		if !json.Valid(doc) {
			t.Fatalf("document(%+v) is not JSON: %s", o, doc)
		}
		var got struct {
			Network   string
			SubnetLen int
			SubnetMin string
			SubnetMax string
			Backend   struct {
				Type          string
				VNI           *int
				Port          *int
				DirectRouting bool
			}
		}
		if err := json.Unmarshal(doc, &got); err != nil {
			t.Fatalf("document(%+v) = %s: %v", o, doc, err)
		}
		// JSON carries text as UTF-8: each invalid byte becomes U+FFFD.
		text := func(s string) string { return string([]rune(s)) }
		want := got
		want.Network, want.SubnetLen, want.SubnetMin, want.SubnetMax = text(network), subnetLen, text(subnetMin), text(subnetMax)
		want.Backend.Type, want.Backend.VNI, want.Backend.Port, want.Backend.DirectRouting = text(backend), nil, nil, directRouting
		if vniGiven {
			want.Backend.VNI = &vni
		}
		if portGiven {
			want.Backend.Port = &port
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("document(%+v) = %s, which reads back as %+v", o, doc, got)
		}
	})
}

// FuzzDecodeStatus: whatever an agent (or something else on its port)
// answers, decoding never panics, an error says something, and a decoded
// status prints without control or format characters (unshown), in as many
// lines as the same
// status with placeholder text, and encodes to JSON that decodes to the same
// status.
func FuzzDecodeStatus(f *testing.F) {
	f.Add([]byte(`{"ready":true,"subnet":"10.244.5.0/24","publicIP":"198.18.0.1","backend":"vxlan","peersKnown":3,"peersProgrammed":3,"lastResync":"2025-01-02T03:04:05Z","driftRepairs":{"route":2},"etcdConnected":true,"badLeases":0}`))
	f.Add([]byte(`{"ready":false,"notReadyReason":"no lease","etcdEndpoints":[{"endpoint":"http://a:1","up":false,"since":"2025-01-02T03:04:05+01:00","error":"refused"}]}`))
	f.Add([]byte(`<html>502 Bad Gateway</html>`))
	f.Add([]byte(`{"lastResync":"2025-01-02T03:04:05+05:30","lastResyncError":"boom","lastResyncOK":"9999-12-31T23:59:59Z"}`))
	f.Add([]byte(`{"lastResync":"not a time"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"peersKnown":3,"peersProgrammed":1,"peersSkipped":[{"lease":"10.244.4.0-24","reason":"public IP 198.19.0.4 is not on-link"},{"lease":"10.244.7.0-24","reason":"BackendData VtepMAC: address \n\t\u0000: invalid"}],"peersSkippedTotal":2}`))
	f.Add([]byte(`{"peersKnown":-1,"peersProgrammed":5,"peersSkipped":[{"lease":"a"},{},{"reason":""}],"peersSkippedTotal":-3,"lastResyncError":"x"}`))
	f.Add([]byte(`{"peersKnown":100,"peersSkipped":[{"lease":"1"},{"lease":"2"},{"lease":"3"},{"lease":"4"},{"lease":"5"},{"lease":"6"},{"lease":"7"},{"lease":"8"},{"lease":"9"},{"lease":"10"},{"lease":"11"}],"peersSkippedTotal":1}`))
	f.Add([]byte(`{"peersSkipped":null,"peersSkippedTotal":9223372036854775807,"peersKnown":-9223372036854775808,"lastResyncError":"x"}`))
	f.Add([]byte(`{"ready":true,"interfaceWarning":"\u202e\u2066\u200b\ufeff\udb40\udc41\u2028\u2029","peersSkipped":[{"lease":"10.244.4.0-24` + "\u202e" + `","reason":"` + "\u200f\u061c" + `"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		st, err := decodeStatus(raw)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("decodeStatus(%q): empty error", raw)
			}
			return
		}
		// The table's lines are printStatus's own: the same status with
		// each text replaced by "x" (empty ones kept) has as many, and no
		// text adds a control character.
		now := time.Now()
		print := func(st agent.Status) string {
			var out bytes.Buffer
			printStatus(&app{out: &out, now: func() time.Time { return now }, loc: time.Local}, st)
			return out.String()
		}
		text := print(st)
		if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && unshown(r) }); i >= 0 {
			t.Fatalf("status %q prints %q, a rune not shown as it is:\n%s", raw, []rune(text[i:])[0], text)
		}
		skeleton := st
		placeholders(reflect.ValueOf(&skeleton).Elem())
		if got, want := strings.Count(text, "\n"), strings.Count(print(skeleton), "\n"); got != want {
			t.Fatalf("status %q prints %d lines, its skeleton %d:\n%s", raw, got, want, text)
		}
		b1, err := json.Marshal(st)
		if err != nil {
			return // a time outside what JSON can carry (year > 9999)
		}
		st2, err := decodeStatus(b1)
		if err != nil {
			t.Fatalf("decodeStatus(%s) of its own encoding: %v", b1, err)
		}
		b2, err := json.Marshal(st2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("status %s changed in a round trip: %s, %v", b1, b2, err)
		}
	})
}

// placeholders replaces each non-empty string reachable from v (fields,
// elements, map keys) with "x", in place; v is addressable. Slices and maps
// are copied first.
func placeholders(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() && v.Len() > 0 {
			v.SetString("x")
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				placeholders(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		for i := range c.Len() {
			placeholders(c.Index(i))
		}
		v.Set(c)
	case reflect.Map:
		if v.IsNil() {
			return
		}
		c := reflect.MakeMap(v.Type())
		for it := v.MapRange(); it.Next(); {
			k := reflect.New(v.Type().Key()).Elem()
			k.Set(it.Key())
			placeholders(k)
			c.SetMapIndex(k, it.Value())
		}
		v.Set(c)
	}
}

// FuzzStatusURL: status's --agent is either refused with a usage error, or
// gives an http(s) URL with a host and a port a server can listen on, whose
// path ends in /status, which parses back to itself; a host:port agentd
// listens on (but port 0, which the kernel picks) is asked there.
func FuzzStatusURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8471", "127.0.0.1:8471", "localhost:8471", "[fd00::1]:8471", "https://h:8471/agent/", "http://", "ftp://h:1", "", "h:1?x#y",
		"[10.0.0.1]:8471", "[fe80::1%eth0]:8471", "[fe80::1%a b/%]:1", "[fe80::1%br-0.5_x]:1", "[::%\xed]:1", "[0::%00]:1", "127.0.0.1:0", "127.0.0.1:99999", "http://h:/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := statusURL(s)
		// A host:port that agentd listens on (--healthz-addr), but for
		// port 0, is asked there, zone and all (a zone of the bytes an
		// interface's usual name has: URLs allow few others).
		host, port, _ := net.SplitHostPort(s)
		_, zone, _ := strings.Cut(host, "%")
		listens := !strings.Contains(s, "://") && agent.CheckListenAddr(s) == nil && !isPortZero(port) && plainZone(zone)
		if err != nil {
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), "--agent") {
				t.Fatalf("statusURL(%q): error %q is not a usage error naming --agent", s, err)
			}
			if listens {
				t.Fatalf("statusURL(%q), where agentd listens: %v", s, err)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || !strings.HasSuffix(u.Path, "/status") || u.String() != got {
			t.Fatalf("statusURL(%q) = %q (%v)", s, got, err)
		}
		// A port no server listens on is refused: 0, past 65535, or none
		// after the colon (which asks port 80).
		if p := u.Port(); p != "" && !validPort(p) || p == "" && strings.HasSuffix(u.Host, ":") {
			t.Fatalf("statusURL(%q) = %q: port %q", s, got, p)
		}
		if listens && (u.Hostname() != host || u.Port() != port) {
			t.Fatalf("statusURL(%q) = %q asks %s", s, got, u.Host)
		}
	})
}
