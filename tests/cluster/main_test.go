package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fakeAgentEnv makes the test binary act as a stand-in agentd, so the
// harness's agent handling is tested before (and independently of) the real
// agentd: it is started with the harness's agent flags, writes subnet.env
// from --fake-subnet, serves /readyz on --healthz-addr (which only works
// inside the host's namespace, where that address exists) and exits 7 on
// SIGTERM; with --fake-exit=N it exits N at once.
const fakeAgentEnv = "CLUSTER_TEST_FAKE_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(fakeAgentEnv) == "1" {
		os.Exit(fakeAgent(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeAgent(args []string) int {
	fmt.Println("fake agent args:", strings.Join(args, " "))
	flags := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "="); ok {
			flags[k] = v
		}
	}
	if code := flags["fake-exit"]; code != "" {
		n, err := strconv.Atoi(code)
		if err != nil {
			fmt.Println(err)
			return 3
		}
		return n
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if sn := flags["fake-subnet"]; sn != "" {
		env := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=" + sn + "\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
		tmp := flags["subnet-file"] + ".tmp"
		if err := os.WriteFile(tmp, []byte(env), 0o644); err != nil {
			fmt.Println(err)
			return 3
		}
		if err := os.Rename(tmp, filepath.Clean(flags["subnet-file"])); err != nil {
			fmt.Println(err)
			return 3
		}
	}
	ln, err := net.Listen("tcp", flags["healthz-addr"])
	if err != nil {
		fmt.Println("listen:", err)
		return 4
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	go func() {
		if err := http.Serve(ln, mux); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Println("serve:", err)
		}
	}()
	<-term
	fmt.Println("fake agent: SIGTERM")
	return 7
}
