package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// keepMappingLoaded loads the group mapping at start, retrying with a growing pause, and then
// refreshes it every interval so that admins' edits of discord_role_id reach the hooks.
func keepMappingLoaded(ctx context.Context, rec *reconcile.Reconciler, every time.Duration, log *slog.Logger) {
	wait := time.Second
	loaded := false
	for {
		err := rec.RefreshMapping(ctx)
		switch {
		case err == nil && !loaded:
			log.Info("group mapping loaded")
			loaded, wait = true, every
		case err == nil:
			wait = every
		case !loaded:
			log.Warn("load group mapping", "err", err, "retry_in", wait)
			wait = min(2*wait, time.Minute)
		default:
			// The previous mapping stays in use; a refresh that fails is no reason to stop.
			log.Warn("refresh group mapping", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func syncCmd(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("discord-id", "", "Discord user ID to sync")
	all := fs.Bool("all", false, "sync every linked user (a full pass)")
	dry := fs.Bool("dry-run", false, "print the plan without applying it")
	force := fs.Bool("force", false, "with --all: apply even when the mass-removal guard trips")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if (*id == "") == !*all {
		fmt.Fprintln(stderr, "bridge sync: give either --discord-id ID or --all")
		return 2
	}
	cfg, ok := loadConfig(lookup, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg, stderr)
	a, err := newApp(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "bridge sync:", err)
		return 1
	}
	// A dry run opens no database: it must not create one, nor migrate one that a newer
	// binary would change. Without the remembered state it plans as for a fresh start.
	// TODO: open an existing database read-only for dry runs, so that their plans use the
	// remembered state too (today a former member the bridge has no state for can show as
	// out of date in a dry run and then need no write in the real pass).
	var store reconcile.Store
	if !*dry {
		s, err := a.openStore(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "bridge sync:", err)
			return 1
		}
		defer s.Close()
		store = s
	}
	rec := a.reconciler(store)
	if *all {
		return syncAll(ctx, rec, *dry, *force, stdout, stderr)
	}

	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := rec.Sync(ctx, reconcile.Target{DiscordID: *id}, "cli", *dry)
	if out != nil && out.Plan != nil {
		fmt.Fprint(stdout, out.Plan.String())
	}
	if err != nil {
		fmt.Fprintln(stderr, "bridge sync:", errorLine(err))
		return 1
	}
	switch out.Result {
	case reconcile.ResultPlanned:
		fmt.Fprintln(stdout, "dry run: nothing was changed")
	case reconcile.ResultChanged:
		fmt.Fprintf(stdout, "applied %d change(s)\n", len(out.Changes))
	case reconcile.ResultUnchanged:
		if *dry {
			fmt.Fprintln(stdout, "dry run: nothing to change")
		} else {
			fmt.Fprintln(stdout, "already in sync")
		}
	}
	return 0
}

func syncAll(ctx context.Context, rec *reconcile.Reconciler, dry, force bool, stdout, stderr io.Writer) int {
	rep, err := rec.FullPass(ctx, reconcile.PassOptions{Trigger: "cli", DryRun: dry, Force: force})
	for _, e := range rep.FirstErrors {
		fmt.Fprintln(stderr, "error:", e)
	}
	// A pass cut short before it knew who is linked has nothing worth printing; one cut short
	// later has done part of its work, which the lines below say.
	interrupted := errors.Is(err, reconcile.ErrInterrupted)
	if interrupted && rep.Linked == 0 {
		fmt.Fprintln(stderr, "bridge sync --all:", errorLine(err))
		return 1
	}
	for _, p := range rep.Plans {
		if !p.Empty() {
			fmt.Fprint(stdout, p.String())
		}
	}
	fmt.Fprintf(stdout, "members %d, linked users %d, out of date %d, losing groups %d\n",
		rep.Members, rep.Linked, rep.Stale, rep.Removals)
	for _, id := range rep.UnknownRoles {
		fmt.Fprintf(stdout, "warning: discord_role_id %s names no role of the guild\n", id)
	}
	for _, inv := range rep.Invalid {
		fmt.Fprintf(stdout, "warning: group %s: %s\n", inv.GroupName, inv.Reason)
	}
	if rep.Stopped != "" && dry {
		fmt.Fprintln(stdout, "the mass-removal guard would stop this pass:", rep.Stopped)
	} else if rep.Stopped != "" {
		fmt.Fprintln(stdout, "stopped:", rep.Stopped)
	}
	switch {
	case dry && (err == nil || interrupted):
		fmt.Fprintln(stdout, "dry run: nothing was changed")
	case err == nil || interrupted:
		// Members, not users: one sync covers every user linked to a Discord account.
		fmt.Fprintf(stdout, "applied %d change(s) in %d member sync(s), %d error(s)\n",
			rep.Changes, rep.Applied, rep.Errors)
	}
	switch {
	case interrupted && dry:
		fmt.Fprintf(stdout, "interrupted: %d out-of-date member(s) not planned\n",
			rep.NotReached)
	case interrupted:
		fmt.Fprintf(stdout, "interrupted: %d out-of-date member(s) not reached; the next pass "+
			"will finish the work\n", rep.NotReached)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bridge sync --all:", errorLine(err))
		return 1
	}
	if rep.Errors > 0 {
		return 1
	}
	return 0
}

// check validates the configuration and then probes each upstream with the calls the bridge
// will make, printing one PASS or FAIL line a probe.
func check(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(lookup, stdout)
	if !ok {
		fmt.Fprintln(stdout, "FAIL configuration")
		return 1
	}
	fmt.Fprintln(stdout, "PASS configuration")
	cfg.Write(prefixWriter{w: stdout, prefix: "     "})

	log := newLogger(cfg, stderr)
	a, err := newApp(cfg, log)
	if err != nil {
		fmt.Fprintln(stdout, "FAIL clients:", err)
		return 1
	}
	failed := false
	probe := func(name string, f func(ctx context.Context) (string, error)) {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		detail, err := f(pctx)
		if err != nil {
			failed = true
			fmt.Fprintf(stdout, "FAIL %s: %s\n", name, errorLine(err))
			return
		}
		fmt.Fprintf(stdout, "PASS %s: %s\n", name, detail)
	}
	guildID := cfg.Discord.GuildID
	probe("discord bot token", func(ctx context.Context) (string, error) {
		u, err := a.discord.BotUser(ctx)
		if err != nil {
			return "", err
		}
		return "bot " + u.Username, nil
	})
	probe("discord guild", func(ctx context.Context) (string, error) {
		g, err := a.discord.Guild(ctx, guildID)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s (%s)", g.Name, g.ID), nil
	})
	probe("discord roles", func(ctx context.Context) (string, error) {
		roles, err := a.discord.Roles(ctx, guildID)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d roles", len(roles)), nil
	})
	probe("discord member list (Server Members intent)", func(ctx context.Context) (string, error) {
		ms, err := a.discord.MembersPage(ctx, guildID, "0", 1)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("readable (%d on the first page)", len(ms)), nil
	})
	probe("authentik token", func(ctx context.Context) (string, error) {
		name, err := a.authentik.Me(ctx)
		if err != nil {
			return "", err
		}
		return "accepted, acting as " + name, nil
	})
	probe("authentik groups", func(ctx context.Context) (string, error) {
		rec := a.reconciler(nil)
		m, err := rec.Mapping(ctx)
		if err != nil {
			return "", err
		}
		detail := fmt.Sprintf("%d managed group(s), %d role ID(s) mapped",
			len(m.ManagedGroups()), len(m.Roles()))
		if inv := m.Invalid(); len(inv) > 0 {
			var parts []string
			for _, i := range inv {
				parts = append(parts, i.GroupName+": "+i.Reason)
			}
			detail += "; invalid entries: " + strings.Join(parts, "; ")
		}
		return detail, nil
	})
	probe("authentik discord source", func(ctx context.Context) (string, error) {
		name, err := a.authentik.Source(ctx)
		if err != nil {
			return "", err
		}
		conns, err := a.authentik.Connections(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%q with %d linked user(s)", name, len(conns)), nil
	})
	if cfg.OIDC.Issuer != "" {
		probe("status page login (OIDC issuer)", func(ctx context.Context) (string, error) {
			p, err := oidc.NewProvider(ctx, cfg.OIDC.Issuer)
			if err != nil {
				return "", err
			}
			return "discovery answered, authorize at " + p.Endpoint().AuthURL, nil
		})
	}
	if failed {
		return 1
	}
	return 0
}

// prefixWriter indents every line written through it.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+l); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
