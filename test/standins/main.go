// Command standins runs the Authentik and Discord stand-ins as one process with a seeded guild,
// so the real bridge binary can be load-tested against them. It writes the bridge's
// environment to -env-out, serves until interrupted, and then prints how many calls each
// stand-in received as one JSON line on stdout.
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

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

const (
	guildID  = "81384788765712384"
	botToken = "standins-bot-token"
	akToken  = "standins-authentik-token"
	secret   = "standins-webhook-secret-0123456789"
)

func main() {
	members := flag.Int("members", 1000, "guild members, each linked to an Authentik user")
	groups := flag.Int("groups", 20, "managed groups, one per role")
	envOut := flag.String("env-out", "", "write the bridge's BRIDGE_* variables to this file")
	usersOut := flag.String("users-out", "", "write one line \"discord_id user_pk\" per member to this file")
	validate := flag.Bool("validate", false, "validate Authentik traffic against the schemas (slow; off for load runs)")
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

	roles := make([]string, *groups)
	var roleObjs []discordstub.Role
	for i := range roles {
		roles[i] = strconv.FormatUint(1187654321098765000+uint64(i), 10)
		r := discordstub.ExampleRole()
		r.ID, r.Name, r.Position = roles[i], fmt.Sprintf("role-%02d", i), *groups-i
		roleObjs = append(roleObjs, r)
		ak.AddGroup(authentikstub.Group{
			Name:       fmt.Sprintf("group-%02d", i),
			Attributes: json.RawMessage(`{"discord_role_id":"` + roles[i] + `"}`),
		})
	}
	dc.SetRoles(roleObjs...)
	ak.AddGroup(authentikstub.Group{Name: "staff", Attributes: json.RawMessage(`{}`)})

	var lines []string
	for i := range *members {
		id := strconv.FormatUint(80351110224600000+uint64(i), 10)
		m := discordstub.ExampleMember()
		m.User.ID, m.User.Username = id, fmt.Sprintf("member%05d", i)
		// Each member holds three roles, so a sync compares a realistic handful of groups.
		m.Roles = []string{roles[i%len(roles)], roles[(i+7)%len(roles)], roles[(i+13)%len(roles)]}
		if err := dc.SetMember(m); err != nil {
			log.Fatalf("seed member: %v", err)
		}
		pk := ak.AddUser(authentikstub.User{
			Username: m.User.Username, Name: m.User.Username, IsActive: true, Type: "external",
			Attributes: json.RawMessage(`{"employee_number":1234567890123456789}`),
		})
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
	if err := writeFile(*envOut, env); err != nil {
		log.Fatal(err)
	}
	if err := writeFile(*usersOut, strings.Join(lines, "\n")+"\n"); err != nil {
		log.Fatal(err)
	}
	log.Printf("stand-ins ready: authentik %s, discord %s, %d members", ak.URL(), dc.APIURL(), *members)

	// SIGUSR1 zeroes the counters, so a load run can leave its warm-up out of the figures.
	reset := make(chan os.Signal, 1)
	signal.Notify(reset, syscall.SIGUSR1)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for done := false; !done; {
		select {
		case <-reset:
			ak.ResetCounts()
			dc.ResetCounts()
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

func writeFile(path, content string) error {
	if path == "" {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o600)
}
