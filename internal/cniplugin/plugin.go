package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentd/agentd/subnet"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Versions are the CNI spec versions the plugin accepts. 1.1.0 (GC, STATUS)
// is left out: the delegates it is tested with (containernetworking-plugins
// 1.1) stop at 1.0.0, and a network is only as new as its oldest plugin.
var Versions = version.PluginSupports("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")

// Plugin runs the CNI commands. The zero value is ready: delegates are
// found in CNI_PATH and results go to stdout.
type Plugin struct {
	// Exec runs delegate plugins; nil means the real one.
	Exec invoke.Exec
	// Stdout receives ADD's result; nil means os.Stdout.
	Stdout io.Writer
}

// Funcs is the plugin's command table for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check}
}

// Add reads subnet.env, saves the delegate configuration for the container
// and runs the delegate's ADD, printing its result in the network's version.
// A missing subnet.env is "try again later" (agentd has not leased a subnet
// yet); a malformed one is an invalid configuration naming the file and key.
// No delegate runs in either case, so no interface gets a wrong address.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	n, saved, err := loadConf(args)
	if err != nil {
		return err
	}
	env, err := readSubnetEnv(n.SubnetFile)
	if err != nil {
		return err
	}
	d, b, err := delegateConf(n, env)
	if err != nil {
		return err
	}
	// Saved first: if the delegate fails half-way, the runtime's DEL must
	// undo exactly this.
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	if err := subnet.WriteFileAtomic(saved, b, 0o600); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("save delegate configuration: %v", err), "")
	}
	res, err := invoke.DelegateAdd(context.Background(), d["type"].(string), b, p.Exec)
	if err != nil {
		return delegateError(d, "ADD", err)
	}
	if n.CNIVersion != "" {
		if res, err = res.GetAsVersion(n.CNIVersion); err != nil {
			return types.NewError(types.ErrIncompatibleCNIVersion, err.Error(), "")
		}
	}
	return res.PrintTo(p.stdout())
}

// Del runs the delegate's DEL with the configuration ADD saved, then forgets
// it. Without a usable saved configuration (ADD never ran here, an earlier
// DEL finished, or the file is damaged) it rebuilds one from subnet.env if
// that is readable, so addresses are still released; otherwise there is
// nothing it can undo, and DEL succeeds (a runtime retries a failed DEL for
// as long as the pod's sandbox exists).
func (p *Plugin) Del(args *skel.CmdArgs) error {
	n, saved, err := loadConf(args)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(saved)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	var d map[string]any
	if err == nil {
		d, err = decodeSaved(saved, b)
	}
	if err != nil {
		env, envErr := subnet.ReadEnv(n.SubnetFile)
		if envErr != nil {
			return removeSaved(saved)
		}
		if d, b, err = delegateConf(n, env); err != nil {
			return err
		}
	}
	if err := invoke.DelegateDel(context.Background(), d["type"].(string), b, p.Exec); err != nil {
		return delegateError(d, "DEL", err)
	}
	return removeSaved(saved)
}

// removeSaved forgets a container's saved delegate configuration.
func removeSaved(saved string) error {
	if err := os.Remove(saved); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	return nil
}

// Check runs the delegate's CHECK with the configuration ADD saved and the
// runtime's prevResult.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	n, saved, err := loadConf(args)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(saved)
	if errors.Is(err, fs.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no network configuration saved for container %s in %s: ADD did not run on this host", args.ContainerID, n.DataDir), "")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	d, err := decodeSaved(saved, b)
	if err != nil {
		return err
	}
	if n.RawPrevResult != nil {
		d["prevResult"] = n.RawPrevResult
	}
	if b, err = json.Marshal(d); err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if err := invoke.DelegateCheck(context.Background(), d["type"].(string), b, p.Exec); err != nil {
		return delegateError(d, "CHECK", err)
	}
	return nil
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

// loadConf reads the network configuration on stdin and the path of the
// container's saved delegate configuration, with CNI error codes.
func loadConf(args *skel.CmdArgs) (n *NetConf, saved string, err error) {
	if n, err = LoadConf(args.StdinData); err != nil {
		return nil, "", types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if saved, err = savedPath(n, args.ContainerID); err != nil {
		return nil, "", err
	}
	return n, saved, nil
}

// delegateConf is DelegateConf and its JSON, with CNI error codes.
func delegateConf(n *NetConf, env subnet.Env) (map[string]any, []byte, error) {
	d, err := DelegateConf(n, env)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return d, b, nil
}

// savedPath is where ADD keeps the delegate configuration for a container:
// dataDir/<container ID>, as flannel's plugin does.
func savedPath(n *NetConf, containerID string) (string, error) {
	if containerID == "" || containerID != filepath.Base(containerID) || strings.HasPrefix(containerID, ".") {
		return "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_CONTAINERID %q cannot name a file", containerID), "")
	}
	return filepath.Join(n.DataDir, containerID), nil
}

// readSubnetEnv reads subnet.env with CNI error codes: missing is transient
// (agentd has not written it yet), malformed is a configuration error.
func readSubnetEnv(path string) (subnet.Env, error) {
	env, err := subnet.ReadEnv(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return env, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s does not exist: agentd writes it once it holds this host's subnet (is agentd running on this host?)", path), "")
	case err != nil:
		return env, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return env, nil
}

func decodeSaved(path string, b []byte) (map[string]any, error) {
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration %s: %v", path, err), "")
	}
	if t, ok := d["type"].(string); !ok || !validPluginName(t) {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("saved configuration %s: no delegate type", path), "")
	}
	return d, nil
}

// delegateError keeps a delegate's CNI error code and says which delegate
// failed.
func delegateError(d map[string]any, verb string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return &types.Error{Code: te.Code, Msg: fmt.Sprintf("%s %s: %s", d["type"], verb, te.Msg), Details: te.Details}
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s %s: %v", d["type"], verb, err), "")
}
