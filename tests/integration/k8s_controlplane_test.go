package integration

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// controlPlane is kube-apiserver, kube-controller-manager and
// kube-scheduler in the etcd namespace, and the test's clients of it.
type controlPlane struct {
	ns     *cluster.Namespace
	ip     netip.Addr
	server string
	pki    *kubePKI
	cl     client.Client
	cs     *kubernetes.Clientset
}

const (
	// serviceCIDR is the API server's --service-cluster-ip-range. Tests use
	// only 198.18.0.0/15 and 10.244.0.0/16 (DESIGN.md); this half of
	// 198.19.0.0/16 is apart from the cluster's underlay (198.18.0.0/24)
	// and its overlay. No kube-proxy runs and no service is reached: the
	// addresses only have to be valid.
	serviceCIDR = "198.19.128.0/17"
	// kubernetesServiceIP is serviceCIDR's first address, the "kubernetes"
	// service's, which the API server's serving certificate names.
	kubernetesServiceIP = "198.19.128.1"
	// clusterDNSIP is the kubelet's clusterDNS, in serviceCIDR; no DNS
	// server runs.
	clusterDNSIP = "198.19.128.10"
	// clusterCIDR is the controller manager's --cluster-cidr, from which it
	// gives each node a podCIDR. agentd does not use it: pods get addresses
	// from the subnet agentd leases in etcd, in the same 10.244.0.0/16.
	clusterCIDR = overlay
)

// startControlPlane starts the three in the etcd namespace (the control
// plane's machine), each authenticated by a client certificate as the user
// Kubernetes' bootstrap RBAC roles expect, with the settings a kubelet on a
// namespace host needs (--kubelet-preferred-address-types=InternalIP) and
// node CIDR allocation on; it returns once the API server is ready.
func startControlPlane(t *testing.T, ctx context.Context, c *cluster.Cluster, bins map[string]string, dir string) *controlPlane {
	t.Helper()
	u, err := url.Parse(c.EtcdEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(u.Hostname())
	pki, err := newKubePKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{ns: c.EtcdNamespace(), ip: ip, server: "https://" + netip.AddrPortFrom(ip, 6443).String(), pki: pki}
	serving, servingKey, err := pki.Issue("apiserver", "kube-apiserver", nil, ip, netip.MustParseAddr(kubernetesServiceIP), netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	kubeletClient, kubeletClientKey, err := pki.Issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	admin, adminKey, err := pki.Issue("admin", "agentd-e2e-admin", []string{"system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	cmConfig, err := pki.Kubeconfig("controller-manager", cp.server, "system:kube-controller-manager")
	if err != nil {
		t.Fatal(err)
	}
	schedConfig, err := pki.Kubeconfig("scheduler", cp.server, "system:kube-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	etcdCA, etcdCert, etcdKey := c.EtcdTLSFiles()
	for _, d := range []string{"apiserver", "controller-manager", "scheduler"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	apiserver, err := cp.ns.Start(bins["kube-apiserver"],
		"--etcd-servers="+c.EtcdEndpoint(), "--etcd-cafile="+etcdCA, "--etcd-certfile="+etcdCert, "--etcd-keyfile="+etcdKey,
		"--bind-address="+ip.String(), "--advertise-address="+ip.String(), "--secure-port=6443",
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey, "--cert-dir="+filepath.Join(dir, "apiserver"),
		"--client-ca-file="+pki.CAFile,
		"--kubelet-client-certificate="+kubeletClient, "--kubelet-client-key="+kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-cluster-ip-range="+serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki.SAKeyFile, "--service-account-signing-key-file="+pki.SAKeyFile,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false", "--v=1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{
		Host:            cp.server,
		TLSClientConfig: rest.TLSClientConfig{CAFile: pki.CAFile, CertFile: admin, KeyFile: adminKey},
		// Sockets made in the etcd namespace: the test never connects to
		// the cluster from its own namespace.
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return cp.ns.Dial(ctx, network, addr)
		},
		Timeout: 30 * time.Second,
	}
	if cp.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	err = apiserver.Eventually(ctx, 3*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cp.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("kube-apiserver not ready: %v", err)
	}
	t.Logf("kube-apiserver ready at %s %v after start", cp.server, time.Since(start).Round(time.Millisecond))
	if cp.cl, err = client.New(cfg, client.Options{}); err != nil {
		t.Fatal(err)
	}

	_, err = cp.ns.Start(bins["kube-controller-manager"],
		"--kubeconfig="+cmConfig, "--bind-address="+ip.String(), "--secure-port=10257", "--cert-dir="+filepath.Join(dir, "controller-manager"),
		"--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki.SAKeyFile, "--root-ca-file="+pki.CAFile,
		"--allocate-node-cidrs", "--cluster-cidr="+clusterCIDR, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+serviceCIDR, "--v=1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cp.ns.Start(bins["kube-scheduler"],
		"--kubeconfig="+schedConfig, "--bind-address="+ip.String(), "--secure-port=10259", "--cert-dir="+filepath.Join(dir, "scheduler"),
		"--leader-elect=false", "--v=1")
	if err != nil {
		t.Fatal(err)
	}
	return cp
}
