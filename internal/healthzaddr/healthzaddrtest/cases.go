// Package healthzaddrtest holds the environments that agentd's and
// agentctl's tests both run, each through its own command, to show that
// agentctl status asks the health server where agentd listens.
package healthzaddrtest

// Case is an environment and the health server agentd runs with it.
type Case struct {
	Name string
	Env  map[string]string
	// Listen is agentd's --healthz-addr as it takes it ("": off).
	Listen string
	// Err is in the one line with which agentd refuses to start, and
	// agentctl status exits 64; "" when both take the environment.
	Err string
}

// Vars are the variables the cases set; a test clears the others.
var Vars = []string{
	"AGENTD_HEALTHZ_ADDR", "AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT",
	"FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT",
}

// Cases are the environments. Those marked "agentctl differed" were
// taken otherwise by agentctl status before it used agentd's code
// (healthzaddr.Resolve).
var Cases = []Case{
	{Name: "none"},
	{Name: "agentd.env", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471"}, Listen: "127.0.0.1:9471"},
	{Name: "AGENTD_ before FLANNELD_", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, Listen: "127.0.0.1:9471"},
	{Name: "FLANNELD_ addr", Env: map[string]string{"FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, Listen: "127.0.0.1:9472"},
	{Name: "every address", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "0.0.0.0:9471"}, Listen: "0.0.0.0:9471"},
	{Name: "no host", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": ":9471"}, Listen: ":9471"},
	{Name: "host name", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "localhost:9471"}, Listen: "localhost:9471"},
	{Name: "flanneld's port", Env: map[string]string{"FLANNELD_HEALTHZ_PORT": "9473"}, Listen: "0.0.0.0:9473"},
	{Name: "flanneld's ip and port", Env: map[string]string{"FLANNELD_HEALTHZ_IP": "127.0.0.3", "FLANNELD_HEALTHZ_PORT": "9473"}, Listen: "127.0.0.3:9473"},
	{Name: "ip host name", Env: map[string]string{"FLANNELD_HEALTHZ_IP": "localhost", "FLANNELD_HEALTHZ_PORT": "9473"}, Listen: "localhost:9473"},
	{Name: "addr wins over port", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471", "AGENTD_HEALTHZ_PORT": "9473"}, Listen: "127.0.0.1:9471"},
	{Name: "best source decides", Env: map[string]string{"AGENTD_HEALTHZ_PORT": "9473", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, Listen: "0.0.0.0:9473"},
	{Name: "port 0 is off", Env: map[string]string{"FLANNELD_HEALTHZ_PORT": "0"}},
	{Name: "negative port is off", Env: map[string]string{"AGENTD_HEALTHZ_PORT": "-1"}},
	{Name: "ip alone is off", Env: map[string]string{"AGENTD_HEALTHZ_IP": "127.0.0.3"}},
	// agentctl differed: it took AGENTD_HEALTHZ_IP alone as off and
	// asked its default, 127.0.0.1:8471.
	{Name: "ip alone turns off no worse source's addr", Env: map[string]string{"AGENTD_HEALTHZ_IP": "127.0.0.3", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, Listen: "127.0.0.1:9472"},
	// agentctl differed likewise: the IP goes with the port of any source.
	{Name: "ip and port from two sources", Env: map[string]string{"AGENTD_HEALTHZ_IP": "127.0.0.3", "FLANNELD_HEALTHZ_PORT": "9473"}, Listen: "127.0.0.3:9473"},
	// agentctl differed: agentd reads the port as its int flag does
	// (strconv.ParseInt, base 0: 0x2501 is 9473, 011 is 9); agentctl
	// refused 0x2501 and asked port 11 for 011.
	{Name: "hex port", Env: map[string]string{"AGENTD_HEALTHZ_PORT": "0x2501"}, Listen: "0.0.0.0:9473"},
	{Name: "octal port", Env: map[string]string{"AGENTD_HEALTHZ_PORT": "011"}, Listen: "0.0.0.0:9"},
	// agentctl differed: it asked the URL agentd refuses to listen on.
	{Name: "URL", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "http://127.0.0.1:9471"}, Err: `invalid AGENTD_HEALTHZ_ADDR "http://127.0.0.1:9471"`},
	{Name: "no port", Env: map[string]string{"AGENTD_HEALTHZ_ADDR": "9471"}, Err: `invalid AGENTD_HEALTHZ_ADDR "9471": address 9471: missing port in address`},
	{Name: "port not a number", Env: map[string]string{"FLANNELD_HEALTHZ_PORT": "x"}, Err: `invalid FLANNELD_HEALTHZ_PORT "x"`},
	{Name: "port too large", Env: map[string]string{"FLANNELD_HEALTHZ_PORT": "70000"}, Err: `invalid FLANNELD_HEALTHZ_PORT "70000": want a port from 1 to 65535, or 0 for off`},
	{Name: "bad ip", Env: map[string]string{"FLANNELD_HEALTHZ_IP": "]", "FLANNELD_HEALTHZ_PORT": "9473"}, Err: `invalid FLANNELD_HEALTHZ_IP "]": neither an IP address nor a host name`},
}
