package cluster

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRunInHost: RunInHost's child runs the subtest that called it, in h1
// (eth0 holds 198.18.0.1/24), given the endpoint of an etcd that holds the
// keys the parent put.
func TestRunInHost(t *testing.T) {
	t.Run("h1", func(t *testing.T) {
		RunInHost(t, map[string]string{"/runinhost/k": "v"}, func(t *testing.T, etcd string) {
			if t.Name() != "TestRunInHost/h1" {
				t.Errorf("the child runs %s, want TestRunInHost/h1", t.Name())
			}
			eth0, err := net.InterfaceByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := eth0.Addrs()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range addrs {
				got = append(got, a.String())
			}
			if !slices.Contains(got, "198.18.0.1/24") {
				t.Errorf("eth0 holds %v, want 198.18.0.1/24 (h1's)", got)
			}
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			resp, err := cli.Get(ctx, "/runinhost/k")
			if err != nil {
				t.Fatalf("etcd at %s: %v", etcd, err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
				t.Errorf("etcd at %s holds /runinhost/k = %v, want v", etcd, resp.Kvs)
			}
		})
	})
}
