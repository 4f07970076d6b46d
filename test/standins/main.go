// Command standins runs the Authentik and Discord stand-ins as one process with a seeded guild,
// so the real bridge binary can be load-tested against them. It writes the bridge's
// environment to -env-out and serves until interrupted; then it prints how many calls each
// stand-in received as one JSON line on stdout.
//
// Signals: SIGUSR1 zeroes the call counters (to leave a warm-up out of the figures); SIGUSR2
// swaps one role of -stale-share of the members, as Discord admins would, so the next full
// pass has exactly that many users to change.
//
//	go run ./test/standins -members 1000 -env-out /tmp/bridge.env
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

const (
	guildID  = "81384788765712384"
	botToken = "standins-bot-token"
	akToken  = "standins-authentik-token"
	secret   = "standins-webhook-secret-0123456789"
)

type world struct {
	ak      *authentikstub.Server
	dc      *discordstub.Server
	roles   []string
	members []discordstub.Member
	stale   float64
	rounds  int
}

func main() {
	members := flag.Int("members", 1000, "guild members, each linked to an Authentik user")
	groups := flag.Int("groups", 20, "managed groups, one per role")
	envOut := flag.String("env-out", "", "write the bridge's BRIDGE_* variables to this file")
	usersOut := flag.String("users-out", "", "write one line \"discord_id user_pk\" per member to this file")
	validate := flag.Bool("validate", false, "validate Authentik traffic against the schemas (slow; off for load runs)")
	converged := flag.Bool("converged", false, "seed Authentik already in line with the guild")
	staleShare := flag.Float64("stale-share", 0.01, "share of members whose roles SIGUSR2 changes")
	avatarFile := flag.String("avatar", "avatars/testdata/tux.png", "image served as every member's avatar (\"\" for none)")
	flag.Parse()

	ak, err := authentikstub.New(authentikstub.Options{Token: akToken, NoValidate: !*validate})
	if err != nil {
		log.Fatalf("start authentik stand-in: %v", err)
	}
	defer ak.Close()
	dc, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: botToken})
	if err != nil {
		log.Fatalf("start discord stand-in: %v", err)
	}
	defer dc.Close()
	w := &world{ak: ak, dc: dc, stale: *staleShare}

	groupOf := map[string]string{} // role ID → group uuid
	var roleObjs []discordstub.Role
	for i := range *groups {
		id := strconv.FormatUint(1187654321098765000+uint64(i), 10)
		w.roles = append(w.roles, id)
		r := discordstub.ExampleRole()
		r.ID, r.Name, r.Position = id, fmt.Sprintf("role-%02d", i), *groups-i
		roleObjs = append(roleObjs, r)
		groupOf[id] = ak.AddGroup(authentikstub.Group{
			Name:       fmt.Sprintf("group-%02d", i),
			Attributes: json.RawMessage(`{"discord_role_id":"` + id + `"}`),
		})
	}
	dc.SetRoles(roleObjs...)
	staff := ak.AddGroup(authentikstub.Group{Name: "staff", Attributes: json.RawMessage(`{}`)})

	var avatar []byte
	if *avatarFile != "" {
		if avatar, err = os.ReadFile(*avatarFile); err != nil {
			log.Fatalf("avatar image: %v (run from the repository root, or pass -avatar)", err)
		}
	}

	var lines []string
	for i := range *members {
		id := strconv.FormatUint(80351110224600000+uint64(i), 10)
		m := discordstub.ExampleMember()
		m.User.ID, m.User.Username = id, fmt.Sprintf("member%06d", i)
		// Each member holds three roles, so a sync compares a realistic handful of groups.
		n := len(w.roles)
		m.Roles = []string{w.roles[i%n], w.roles[(i+7)%n], w.roles[(i+13)%n]}
		if err := dc.SetMember(m); err != nil {
			log.Fatalf("seed member: %v", err)
		}
		if avatar != nil && m.User.Avatar != nil {
			dc.SetAvatar("avatars/"+id+"/"+*m.User.Avatar+".png", "image/png", avatar)
		}
		w.members = append(w.members, m)

		attrs := `{"employee_number":1234567890123456789}`
		if *converged {
			attrs = `{"employee_number":1234567890123456789,"discord":` + desired(m) + `}`
		}
		pk := ak.AddUser(authentikstub.User{
			Username: m.User.Username, Name: m.User.Username, IsActive: true, Type: "external",
			Attributes: json.RawMessage(attrs),
		})
		ak.AddMember(staff, pk)
		if *converged {
			for _, r := range m.Roles {
				ak.AddMember(groupOf[r], pk)
			}
		}
		ak.AddConnection("discord", pk, id)
		lines = append(lines, fmt.Sprintf("%s %d", id, pk))
	}

	env := strings.Join([]string{
		"BRIDGE_DISCORD_TOKEN=" + botToken,
		"BRIDGE_DISCORD_GUILD_ID=" + guildID,
		"BRIDGE_DISCORD_API_URL=" + dc.APIURL(),
		"BRIDGE_DISCORD_CDN_URL=" + dc.CDNURL(),
		"BRIDGE_AUTHENTIK_URL=" + ak.URL(),
		"BRIDGE_AUTHENTIK_TOKEN=" + akToken,
		"BRIDGE_WEBHOOK_SECRET=" + secret,
	}, "\n") + "\n"
	if err := writeFile(*usersOut, strings.Join(lines, "\n")+"\n"); err != nil {
		log.Fatal(err)
	}
	// The env file is written last: scripts wait for it as the sign that seeding is done.
	if err := writeFile(*envOut, env); err != nil {
		log.Fatal(err)
	}
	log.Printf("stand-ins ready: authentik %s, discord %s, %d members", ak.URL(), dc.APIURL(), *members)

	reset := make(chan os.Signal, 1)
	perturb := make(chan os.Signal, 1)
	signal.Notify(reset, syscall.SIGUSR1)
	signal.Notify(perturb, syscall.SIGUSR2)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for done := false; !done; {
		select {
		case <-reset:
			ak.ResetCounts()
			dc.ResetCounts()
		case <-perturb:
			log.Printf("changed the roles of %d members", w.perturb())
		case <-ctx.Done():
			done = true
		}
	}

	akc, dcc := ak.Counts(), dc.Counts()
	out, _ := json.Marshal(map[string]any{
		"authentik_reads": akc.Reads, "authentik_writes": akc.Writes,
		"discord_calls": dcc.Total, "authentik_routes": akc.ByRoute, "discord_routes": dcc.ByRoute,
	})
	fmt.Println(string(out))
}

// perturb replaces the first role of every k-th member with another role, k = 1/stale.
func (w *world) perturb() int {
	w.rounds++
	step := int(1 / w.stale)
	n := 0
	for i := w.rounds % step; i < len(w.members); i += step {
		m := w.members[i]
		m.Roles = append([]string{w.roles[(i+w.rounds*3+1)%len(w.roles)]}, m.Roles[1:]...)
		if err := w.dc.SetMember(m); err != nil {
			log.Printf("perturb member %s: %v", m.User.ID, err)
			continue
		}
		w.members[i] = m
		n++
	}
	return n
}

// desired is the attributes.discord value the bridge would write for m.
func desired(m discordstub.Member) string {
	raw, _ := json.Marshal(m)
	var dm discordgo.Member
	if err := json.Unmarshal(raw, &dm); err != nil {
		log.Fatalf("member %s: %v", m.User.ID, err)
	}
	a := reconcile.DesiredDiscordAttribute(&dm)
	a.SyncedAt = time.Now().UTC().Format(time.RFC3339)
	out, _ := json.Marshal(a)
	return string(out)
}

func writeFile(path, content string) error {
	if path == "" {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o600)
}
