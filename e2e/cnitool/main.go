// cnitool: a small libcni driver used by meshcut's e2e tests and by operators
// to run ADD/CHECK/DEL of a real conflist against a test network namespace,
// exactly as a container runtime would (libcni CNIConfig + conflist API,
// result cache, prevResult on CHECK/DEL).
//
// Built GOPATH-style from Debian's golang-github-appc-cni-dev (libcni 1.1.2),
// see build.sh. libcni 1.1.2 predates the STATUS and GC verbs (CNI spec 1.1,
// libcni 1.2.0), so
// "status" and "gc" are recognised but rejected with exit code 2.
//
// Exit codes: 0 success, 1 the CNI operation (a plugin, config loading) failed,
// 2 usage error or unsupported verb.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const usageText = `usage: cnitool [-confdir DIR] [-bindir DIR[:DIR]] [-cachedir DIR]
               add|check|del|status|gc NETWORK_NAME NETNS_PATH
               [-id CONTAINER_ID] [-ifname eth0] [-args 'K=V;K=V'] [-cap-json JSON]

  add    AddNetworkList, prints the CNI result JSON on stdout
  check  CheckNetworkList (uses the result cached by add)
  del    DelNetworkList; NETNS_PATH may be "" (runtime's DEL without netns),
         then -id is required
  status, gc: not available in libcni 1.1.2 (exit 2)

Defaults: -confdir $NETCONFPATH or /etc/cni/net.d; -bindir $CNI_PATH or
/opt/cni/bin:/usr/lib/cni; -cachedir libcni's default (/var/lib/cni);
-ifname $CNI_IFNAME or eth0; -args $CNI_ARGS; -cap-json $CAP_ARGS;
-id: cnitool-<hash of NETNS_PATH> like upstream cnitool.
Flags may appear before or after the positional arguments.
`

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

type options struct {
	confDir  string
	binDir   string
	cacheDir string
	id       string
	ifName   string
	args     string
	capJSON  string
	timeout  time.Duration
}

// parseArgs accepts flags interleaved with positional arguments (the flag
// package alone stops at the first non-flag). Empty positionals ("") are kept.
func parseArgs(argv []string) (*options, []string, error) {
	o := &options{}
	fs := flag.NewFlagSet("cnitool", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usageText) }
	fs.StringVar(&o.confDir, "confdir", envOr("NETCONFPATH", "/etc/cni/net.d"), "directory holding *.conflist / *.conf")
	fs.StringVar(&o.binDir, "bindir", envOr("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"), "plugin search path, ':'-separated")
	fs.StringVar(&o.cacheDir, "cachedir", "", "libcni result cache dir (default "+libcni.CacheDir+")")
	fs.StringVar(&o.id, "id", "", "container ID (CNI_CONTAINERID)")
	fs.StringVar(&o.ifName, "ifname", envOr("CNI_IFNAME", "eth0"), "interface name in the netns (CNI_IFNAME)")
	fs.StringVar(&o.args, "args", os.Getenv("CNI_ARGS"), "CNI_ARGS, 'K=V;K=V'")
	fs.StringVar(&o.capJSON, "cap-json", os.Getenv("CAP_ARGS"), "capability args as a JSON object (runtimeConfig)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "overall timeout of the operation")

	var pos []string
	rest := argv
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	return o, pos, nil
}

func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		parts := strings.SplitN(kv, "=", 2)
		if len(parts) != 2 || parts[0] == "" {
			return nil, fmt.Errorf("invalid -args element %q, want KEY=VALUE", kv)
		}
		out = append(out, [2]string{parts[0], parts[1]})
	}
	return out, nil
}

func splitPath(s string) []string {
	var out []string
	for _, p := range filepath.SplitList(s) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func usageErr(format string, a ...interface{}) int {
	fmt.Fprintf(os.Stderr, "cnitool: "+format+"\n", a...)
	fmt.Fprint(os.Stderr, usageText)
	return exitUsage
}

// reportErr prints a CNI failure on stderr: the libcni message and, when a
// plugin returned a structured CNI error, that error as JSON.
func reportErr(verb string, err error) int {
	fmt.Fprintf(os.Stderr, "cnitool: %s failed: %v\n", verb, err)
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		if b, jerr := json.Marshal(cniErr); jerr == nil {
			fmt.Fprintf(os.Stderr, "cni-error: %s\n", b)
		}
	}
	return exitFail
}

func run(argv []string) int {
	o, pos, err := parseArgs(argv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) == 0 {
		return usageErr("missing command")
	}
	verb := pos[0]
	switch verb {
	case "add", "check", "del":
	case "status", "gc":
		fmt.Fprintf(os.Stderr, "cnitool: %q is not supported: libcni 1.1.2 (Debian golang-github-appc-cni-dev) "+
			"has no STATUS/GC verbs (added in libcni 1.2.0 / CNI spec 1.1.0); only add, check, del are available\n", verb)
		return exitUsage
	default:
		return usageErr("unknown command %q", verb)
	}
	if len(pos) != 3 {
		return usageErr("%s needs NETWORK_NAME and NETNS_PATH (got %d positional args)", verb, len(pos)-1)
	}
	netName, netns := pos[1], pos[2]

	if netns != "" {
		if abs, err := filepath.Abs(netns); err == nil {
			netns = abs
		}
	}
	if o.id == "" {
		if netns == "" {
			return usageErr("-id is required when NETNS_PATH is empty")
		}
		s := sha512.Sum512([]byte(netns))
		o.id = fmt.Sprintf("cnitool-%x", s[:10])
	}
	if o.ifName == "" {
		return usageErr("-ifname must not be empty")
	}
	cniArgs, err := parseCNIArgs(o.args)
	if err != nil {
		return usageErr("%v", err)
	}
	var capArgs map[string]interface{}
	if o.capJSON != "" {
		if err := json.Unmarshal([]byte(o.capJSON), &capArgs); err != nil {
			return usageErr("-cap-json is not a JSON object: %v", err)
		}
	}
	paths := splitPath(o.binDir)
	if len(paths) == 0 {
		return usageErr("-bindir is empty")
	}

	netconf, err := libcni.LoadConfList(o.confDir, netName)
	if err != nil {
		return reportErr("loading network "+netName+" from "+o.confDir, err)
	}

	cninet := libcni.NewCNIConfigWithCacheDir(paths, o.cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    o.id,
		NetNS:          netns,
		IfName:         o.ifName,
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	switch verb {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			return reportErr("ADD", err)
		}
		if result != nil {
			if err := result.PrintTo(os.Stdout); err != nil {
				fmt.Fprintf(os.Stderr, "cnitool: printing result: %v\n", err)
				return exitFail
			}
			fmt.Fprintln(os.Stdout)
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			return reportErr("CHECK", err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			return reportErr("DEL", err)
		}
	}
	return exitOK
}

func main() {
	os.Exit(run(os.Args[1:]))
}
