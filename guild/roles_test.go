package guild_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/guild"
)

// fakeRoles answers the roles it holds, or err.
type fakeRoles struct {
	roles   []*discordgo.Role
	err     error
	guildID string // the guild asked for last
}

func (f *fakeRoles) Roles(_ context.Context, guildID string) ([]*discordgo.Role, error) {
	f.guildID = guildID
	return f.roles, f.err
}

func exampleRole(t *testing.T) *discordgo.Role {
	t.Helper()
	var r discordgo.Role
	readJSON(t, "testdata/role.example.json", &r)
	return &r
}

func TestRoles_Refresh(t *testing.T) {
	example := exampleRole(t)
	lister := &fakeRoles{roles: []*discordgo.Role{
		{ID: guildID, Name: "@everyone", Position: 0},
		example,
		{ID: "900", Name: "Admins", Color: 0xff0000, Position: 3},
		{ID: "1000", Name: "Bots", Position: 3, Managed: true},
	}}
	r := guild.NewRoles(lister, guildID)

	if got := r.All(); len(got) != 0 || !r.Fetched().IsZero() {
		t.Fatalf("before Refresh: All = %v, Fetched = %v; want empty and zero", got, r.Fetched())
	}
	if err := r.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if lister.guildID != guildID {
		t.Errorf("asked for guild %q, want %q", lister.guildID, guildID)
	}

	want := []guild.Role{
		{ID: "900", Name: "Admins", Color: 0xff0000, Position: 3},
		{ID: "1000", Name: "Bots", Position: 3, Managed: true},
		{ID: "41771983423143936", Name: "WE DEM BOYZZ!!!!!!", Color: 3447003, Position: 1},
		{ID: guildID, Name: "@everyone"},
	}
	if diff := cmp.Diff(want, r.All()); diff != "" {
		t.Errorf("All (-want +got):\n%s", diff)
	}
	if got, ok := r.Get("41771983423143936"); !ok || got.Color != 3447003 {
		t.Errorf("Get(example) = %+v, %t; want the example role", got, ok)
	}
	if _, ok := r.Get("1"); ok {
		t.Errorf("Get(unknown) found a role")
	}
	fetched := r.Fetched()
	if fetched.IsZero() {
		t.Errorf("Fetched is zero after a refresh")
	}

	t.Run("failed refresh keeps the last good set", func(t *testing.T) {
		lister.err = errors.New("discord down")
		t.Cleanup(func() { lister.err = nil })
		if err := r.Refresh(t.Context()); !errors.Is(err, lister.err) {
			t.Fatalf("Refresh error = %v, want the lister's", err)
		}
		if diff := cmp.Diff(want, r.All()); diff != "" {
			t.Errorf("All after a failed refresh (-want +got):\n%s", diff)
		}
		if !r.Fetched().Equal(fetched) {
			t.Errorf("Fetched moved to %v on a failed refresh", r.Fetched())
		}
	})

	t.Run("role without id is refused", func(t *testing.T) {
		saved := lister.roles
		lister.roles = []*discordgo.Role{example, nil}
		t.Cleanup(func() { lister.roles = saved })
		if err := r.Refresh(t.Context()); err == nil {
			t.Fatal("Refresh succeeded with a nil role")
		}
		if len(r.All()) != len(want) {
			t.Errorf("All changed after a refused refresh")
		}
	})

	t.Run("deleted role disappears", func(t *testing.T) {
		lister.roles = lister.roles[:2]
		if err := r.Refresh(t.Context()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if _, ok := r.Get("900"); ok {
			t.Errorf("deleted role 900 still there")
		}
		if got := len(r.All()); got != 2 {
			t.Errorf("All has %d roles, want 2", got)
		}
	})

	t.Run("All returns a copy", func(t *testing.T) {
		all := r.All()
		all[0].Name = "changed"
		if r.All()[0].Name == "changed" {
			t.Errorf("changing All's result changed the set")
		}
	})
}
