// Command sandbox runs the real bridge against the Discord and Authentik stand-ins, with a
// seeded makerspace guild and a trickle of role changes, so that anyone with Go can watch the
// bridge and log in to its status page within a minute. It needs nothing but Go:
//
//	go run ./test/sandbox                      # status page on http://127.0.0.1:8080/
//	go run ./test/sandbox -listen 127.0.0.1:0  # on any free port
//
// The guild has a few dozen members with real avatars (one without, one whose image is
// broken), roles with colours, and Authentik groups whose discord_role_id attributes include
// the mistakes admins make: a number, a list, an object, a superuser group and a deleted role.
// Ctrl-C stops everything and deletes the data unless -keep-data is given.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process, so that a test can drive the command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080",
		"the bridge's address, on loopback; port 0 picks a free one")
	fs.StringVar(&o.DataDir, "data", "",
		"the bridge's data directory, kept after exit (default: a temporary one)")
	fs.BoolVar(&o.KeepData, "keep-data", false,
		"keep the temporary data directory and the bridge's log after exit")
	fs.DurationVar(&o.Trickle, "trickle", 5*time.Second,
		"time between two changes to the guild (0 turns the trickle off)")
	fs.DurationVar(&o.Resync, "resync", 30*time.Second, "the bridge's full-pass interval")
	fs.BoolVar(&o.Validate, "validate", false,
		"check the bridge's Authentik traffic against Authentik's API schemas")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the trickle's random choices")
	verbose := fs.Bool("v", false, "show the bridge's log here as well as in its log file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sandbox: unexpected arguments %q\n", fs.Args())
		return 2
	}

	o.Out = stdout
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *verbose {
		o.BridgeOutput = stderr
	}
	fmt.Fprintln(stdout, "Building the bridge and seeding the stand-ins…")
	sb, err := Start(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "sandbox: %v\n", err)
		return 1
	}
	printSummary(stdout, sb, o)

	code := 0
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "\nStopping…")
	case <-sb.Exited():
		fmt.Fprintf(stderr, "sandbox: the bridge stopped on its own (%v); its log ends:\n%s",
			sb.ExitErr(), sb.LogTail())
		code = 1
	}
	if err := sb.Close(); err != nil && code == 0 {
		fmt.Fprintf(stderr, "sandbox: stop: %v\n", err)
		code = 1
	}
	for _, v := range sb.Authentik.Violations() {
		fmt.Fprintf(stderr, "sandbox: authentik schema violation: %s\n", v)
	}
	if o.KeepData {
		fmt.Fprintf(stdout, "Kept the data in %s and the log in %s\n", sb.DataDir, sb.LogPath)
	}
	return code
}

func printSummary(w io.Writer, sb *Sandbox, o Options) {
	members := 0
	for _, m := range sb.Guild.Members {
		if m.InGuild {
			members++
		}
	}
	data := "deleted on exit; -keep-data keeps it"
	if o.DataDir != "" || o.KeepData {
		data = "kept"
	}
	trickle := "off"
	if o.Trickle > 0 {
		trickle = fmt.Sprintf("a change every %s (-trickle 0 turns it off)", o.Trickle)
	}

	fmt.Fprintf(w, `
The bridge is running.

  Status page   %s/
  Admin login   %s / %s   (in %s, may see the page)
  Other login   %s / %s   (not an admin, refused)

  Authentik     %s   OIDC issuer %s
  Discord       %s   guild %q, %d members, %d roles
  Data          %s (%s)
  Bridge log    %s
  Trickle       %s

Press Ctrl-C to stop.

`, sb.URL, sb.Admin.Username, sb.Admin.Password, sb.AdminGroup,
		sb.Member.Username, sb.Member.Password,
		sb.Authentik.URL(), sb.Issuer, sb.Discord.APIURL(), sb.Guild.Name, members,
		len(sb.Guild.Roles), sb.DataDir, data, sb.LogPath, trickle)
}
