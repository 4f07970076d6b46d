// Command bridge keeps Authentik's groups and user attributes in line with a Discord guild.
//
//	bridge serve                          answer Authentik's webhooks
//	bridge sync --discord-id ID [--dry-run]  sync one member from the command line
//	bridge check                          validate the configuration and probe both APIs
//	bridge version
//
// Configuration comes from BRIDGE_* environment variables, optionally completed by a file of
// KEY=value lines given with --env-file before the command; see the README.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/joho/godotenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

const usage = `usage: bridge [--env-file FILE] <command> [flags]

commands:
  serve     answer Authentik's webhooks and keep the group mapping current
  sync      sync one Discord member now: sync --discord-id ID [--dry-run]
  check     validate the configuration, then probe Discord and Authentik
  version   print the version
`

// run is main without the process: tests call it with their own arguments and environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if path, rest, ok := envFileArg(args); ok {
		fileEnv, err := godotenv.Read(path)
		if err != nil {
			fmt.Fprintf(stderr, "bridge: read env file: %v\n", err)
			return 2
		}
		lookup = withFallback(lookup, fileEnv)
		args = rest
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, stderr, lookup)
	case "sync":
		return syncCmd(ctx, rest, stdout, stderr, lookup)
	case "check":
		return check(ctx, rest, stdout, stderr, lookup)
	case "version", "--version":
		fmt.Fprintln(stdout, "bridge", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "bridge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

// withFallback looks a variable up in the environment first and in the file second, so that a
// variable set for one run overrides the file.
func withFallback(env func(string) (string, bool), file map[string]string) func(string) (string, bool) {
	return func(key string) (string, bool) {
		if v, ok := env(key); ok {
			return v, true
		}
		v, ok := file[key]
		return v, ok
	}
}

// envFileArg takes a leading --env-file FILE (or --env-file=FILE) off args.
func envFileArg(args []string) (path string, rest []string, ok bool) {
	if len(args) == 0 {
		return "", args, false
	}
	for _, flag := range []string{"--env-file", "-env-file"} {
		if v, found := strings.CutPrefix(args[0], flag+"="); found {
			return v, args[1:], true
		}
		if args[0] == flag && len(args) >= 2 {
			return args[1], args[2:], true
		}
	}
	return "", args, false
}
