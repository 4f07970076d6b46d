package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// toggleRoles are the roles the trickle and MakeStale give and take: each feeds a group, except
// Event Crew, which no group uses, and Keyholder, whose only group has a broken mapping.
var toggleRoles = []string{
	"laser", "printing", "electronics", "woodshop", "editors", "inventory", "keyholder", "events",
}

// guildState is the guild as the sandbox changes it after seeding: what the Discord stand-in
// holds, and who left.
type guildState struct {
	dc *discordstub.Server

	mu      sync.Mutex
	members map[string]discordstub.Member // by Discord ID, those in the guild
	gone    []discordstub.Member          // those the trickle made leave
	steady  []string                      // IDs the trickle never touches (the logins)
	rand    *rand.Rand
}

func newGuildState(dc *discordstub.Server, members map[string]discordstub.Member, seed uint64,
	steady ...string,
) *guildState {
	return &guildState{
		dc: dc, members: members, steady: steady, rand: rand.New(rand.NewPCG(seed, 0x7472)),
	}
}

// trickle makes one change every interval until ctx ends, as a guild's admins and members
// would: mostly role changes, sometimes a new nickname, now and then someone leaving or coming
// back. Each goes out as a gateway event and is described on out.
func (g *guildState) trickle(ctx context.Context, every time.Duration, out io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		desc, err := g.step()
		if err != nil {
			fmt.Fprintf(out, "%s trickle failed: %v\n", time.Now().Format(time.TimeOnly), err)
			continue
		}
		fmt.Fprintf(out, "%s trickle: %s\n", time.Now().Format(time.TimeOnly), desc)
	}
}

// step makes one random change and describes it.
func (g *guildState) step() (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	m, ok := g.pick()
	if !ok {
		return "", errors.New("no member left to change")
	}
	roll := g.rand.IntN(100)
	switch {
	case roll < 8 && len(g.gone) > 0:
		m := g.gone[0]
		g.gone = g.gone[1:]
		g.members[m.User.ID] = m
		return "@" + m.User.Username + " joined again", g.dc.DispatchMemberAdd(m)
	case roll < 14 && len(g.gone) < 2:
		delete(g.members, m.User.ID)
		g.gone = append(g.gone, m)
		return "@" + m.User.Username + " left the guild", g.dc.DispatchMemberRemove(m.User.ID)
	case roll < 26:
		desc := "@" + m.User.Username + " dropped their nickname"
		if m.Nick == nil {
			name := m.User.Username
			if m.User.GlobalName != nil {
				name, _, _ = strings.Cut(*m.User.GlobalName, " ")
			}
			nick := name + " 🔧"
			m.Nick, desc = &nick, "@"+m.User.Username+" is now called "+nick
		} else {
			m.Nick = nil
		}
		g.members[m.User.ID] = m
		return desc, g.dc.DispatchMemberUpdate(m)
	default:
		key := toggleRoles[g.rand.IntN(len(toggleRoles))]
		m, desc := toggle(m, key)
		g.members[m.User.ID] = m
		return desc, g.dc.DispatchMemberUpdate(m)
	}
}

// pick returns a random member the trickle may change, the same for a given seed and history.
// Caller holds g.mu.
func (g *guildState) pick() (discordstub.Member, bool) {
	var ids []string
	for id, m := range g.members {
		if !slices.Contains(g.steady, id) && !m.User.Bot {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return discordstub.Member{}, false
	}
	slices.Sort(ids)
	return g.members[ids[g.rand.IntN(len(ids))]], true
}

// toggle gives m the role if it lacks it and takes it away otherwise.
func toggle(m discordstub.Member, key string) (discordstub.Member, string) {
	id := roleIDs[key]
	m.Roles = slices.Clone(m.Roles)
	if i := slices.Index(m.Roles, id); i >= 0 {
		m.Roles = slices.Delete(m.Roles, i, i+1)
		return m, "@" + m.User.Username + " lost " + roleName(key)
	}
	m.Roles = append(m.Roles, id)
	return m, "@" + m.User.Username + " got " + roleName(key)
}

// errNotMember is returned for a Discord ID the guild does not (or no longer) hold.
var errNotMember = errors.New("not a member of the guild")

// makeStale gives the member the first of toggleRoles it lacks that feeds a group, without a
// gateway event: Discord and Authentik now differ until something syncs the member.
func (g *guildState) makeStale(discordID string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	m, ok := g.members[discordID]
	if !ok {
		return "", fmt.Errorf("make %s stale: %w", discordID, errNotMember)
	}
	for _, key := range toggleRoles {
		if slices.Contains(m.Roles, roleIDs[key]) || len(groupsOf(key)) == 0 {
			continue
		}
		m, desc := toggle(m, key)
		if err := g.dc.SetMember(m); err != nil {
			return "", fmt.Errorf("make %s stale: %w", discordID, err)
		}
		g.members[discordID] = m
		return desc, nil
	}
	return "", fmt.Errorf("make %s stale: already holds every role", discordID)
}
