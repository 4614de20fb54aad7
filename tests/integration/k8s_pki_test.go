package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// kubePKI is the certificate authority of TestK8sNode's control plane: one
// CA signs the API server's serving certificate and every client
// certificate (the components authenticate as the users Kubernetes'
// bootstrap RBAC roles expect), and a key signs service account tokens.
// ECDSA P-256, valid for a day, PEM files in dir.
type kubePKI struct {
	dir    string
	CAFile string
	// SAKeyFile is the service account signing key (private; the API server
	// derives the public key from it).
	SAKeyFile string

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newKubePKI(dir string) (*kubePKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "agentd e2e-k8s CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &kubePKI{dir: dir, CAFile: filepath.Join(dir, "ca.crt"), SAKeyFile: filepath.Join(dir, "sa.key"), ca: ca, caKey: key, serial: 1}
	if err := writePEMFile(p.CAFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	if err := writePEMFile(p.SAKeyFile, "EC PRIVATE KEY", b); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue writes <name>.crt and <name>.key: a client certificate for user cn
// in groups orgs, which is also a serving certificate for ips when any are
// given.
func (p *kubePKI) Issue(name, cn string, orgs []string, ips ...netip.Addr) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	p.serial++
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(ips) > 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := errors.Join(writePEMFile(certFile, "CERTIFICATE", der), writePEMFile(keyFile, "EC PRIVATE KEY", kb)); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// Kubeconfig writes <name>.kubeconfig for user cn in groups orgs talking to
// server, with a new client certificate.
func (p *kubePKI) Kubeconfig(name, server, cn string, orgs ...string) (string, error) {
	cert, key, err := p.Issue(name, cn, orgs)
	if err != nil {
		return "", err
	}
	path := filepath.Join(p.dir, name+".kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: %s
current-context: e2e
`, server, p.CAFile, name, cert, key, name)
	return path, os.WriteFile(path, []byte(kc), 0o600)
}

func writePEMFile(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
