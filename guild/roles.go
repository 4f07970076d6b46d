package guild

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/discord"
)

// Role is what the bridge shows of a guild role.
type Role struct {
	ID       string
	Name     string
	Color    int // RGB as an integer, 0 for no colour
	Position int // higher is further up Discord's role list
	Managed  bool
}

// RoleLister fetches every role of a guild; *discord.Client is one.
type RoleLister interface {
	Roles(ctx context.Context, guildID string) ([]*discordgo.Role, error)
}

var _ RoleLister = (*discord.Client)(nil)

// Roles keeps the guild's roles (name, colour, position) current. Refresh replaces the whole
// set; a failed refresh keeps the previous one, so readers always see the last good list.
// It is safe for concurrent use.
type Roles struct {
	lister  RoleLister
	guildID string

	mu      sync.RWMutex
	byID    map[string]Role
	sorted  []Role
	fetched time.Time
}

// NewRoles returns an empty set for the guild; call Refresh to fill it.
func NewRoles(l RoleLister, guildID string) *Roles {
	return &Roles{lister: l, guildID: guildID, byID: map[string]Role{}}
}

// Refresh fetches the guild's roles and replaces the set.
func (r *Roles) Refresh(ctx context.Context) error {
	list, err := r.lister.Roles(ctx, r.guildID)
	if err != nil {
		return fmt.Errorf("refresh roles: %w", err)
	}

	byID := make(map[string]Role, len(list))
	for _, dr := range list {
		if dr == nil || dr.ID == "" {
			return errors.New("refresh roles: role without id")
		}
		byID[dr.ID] = Role{
			ID:       dr.ID,
			Name:     dr.Name,
			Color:    dr.Color,
			Position: dr.Position,
			Managed:  dr.Managed,
		}
	}
	sorted := make([]Role, 0, len(byID))
	for _, role := range byID {
		sorted = append(sorted, role)
	}
	// Positions can tie (Discord does not renumber at once); the ID keeps the order stable.
	slices.SortFunc(sorted, func(a, b Role) int {
		if c := cmp.Compare(b.Position, a.Position); c != 0 {
			return c
		}
		return compareIDs(a.ID, b.ID)
	})

	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID, r.sorted, r.fetched = byID, sorted, time.Now()
	return nil
}

// Get returns the role with the ID, if the last refresh saw it.
func (r *Roles) Get(id string) (Role, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	role, ok := r.byID[id]
	return role, ok
}

// All returns every role, highest position first; the caller owns the slice.
func (r *Roles) All() []Role {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.sorted)
}

// Fetched is when the last successful refresh finished; zero before the first.
func (r *Roles) Fetched() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.fetched
}
