package guild_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/guild"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

const (
	guildID = "41771983423143937"
	nelly   = "80351110224678912"
)

// exampleMember is Discord's documented member holding Discord's documented migrated user.
func exampleMember(t *testing.T) *discordgo.Member {
	t.Helper()
	var m discordgo.Member
	readJSON(t, "testdata/guild_member.example.json", &m)
	m.User = &discordgo.User{}
	readJSON(t, "testdata/user_migrated.example.json", m.User)
	return &m
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// fakeMembers answers like discord.Client: members by user ID, ErrNotMember otherwise.
type fakeMembers struct {
	members map[string]*discordgo.Member
	err     error
}

func (f fakeMembers) Member(_ context.Context, _, userID string) (*discordgo.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	m, ok := f.members[userID]
	if !ok {
		return nil, &discord.Error{Op: "get member", Status: 404, Code: 10007,
			Err: discord.ErrNotMember}
	}
	return m, nil
}

func TestLookup(t *testing.T) {
	member := exampleMember(t)
	pending := exampleMember(t)
	pending.User.ID = "2"
	pending.Pending = true
	outage := &discord.Error{Op: "get member", Status: 503, Retryable: true}

	tests := []struct {
		name      string
		getter    guild.MemberGetter
		user      string
		wantState guild.State
		wantErr   error
	}{
		{"member", fakeMembers{members: map[string]*discordgo.Member{nelly: member}},
			nelly, guild.StateMember, nil},
		{"pending", fakeMembers{members: map[string]*discordgo.Member{"2": pending}},
			"2", guild.StatePending, nil},
		{"absent", fakeMembers{}, nelly, guild.StateAbsent, nil},
		{"discord down", fakeMembers{err: outage}, nelly, "", outage},
		{"nil member without error", fakeMembers{members: map[string]*discordgo.Member{nelly: nil}},
			nelly, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := guild.Lookup(t.Context(), tt.getter, guildID, tt.user)
			if tt.wantState == "" {
				if err == nil {
					t.Fatalf("Lookup = %+v, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v does not wrap %v", err, tt.wantErr)
				}
				if got != (guild.Membership{}) {
					t.Errorf("Membership = %+v with the error, want zero", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if got.State != tt.wantState {
				t.Errorf("State = %q, want %q", got.State, tt.wantState)
			}
			if (got.Member == nil) != (tt.wantState == guild.StateAbsent) {
				t.Errorf("Member = %v for state %q", got.Member, got.State)
			}
		})
	}
}

// TestLookup_client runs Lookup against discord.Client and the stand-in, so that the
// not-a-member answer travels the real way.
func TestLookup_client(t *testing.T) {
	s, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	m := discordstub.ExampleMember()
	m.Roles = []string{"41771983423143936"}
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	m.User.ID, m.Pending = "2", true
	if err := s.SetMember(m); err != nil {
		t.Fatal(err)
	}
	c, err := discord.NewClient(discord.Options{Token: "t", APIURL: s.APIURL()})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		user      string
		wantState guild.State
		wantRoles []string
	}{
		{nelly, guild.StateMember, []string{"41771983423143936"}},
		{"2", guild.StatePending, []string{"41771983423143936"}},
		{"3", guild.StateAbsent, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.wantState), func(t *testing.T) {
			got, err := guild.Lookup(t.Context(), c, guildID, tt.user)
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if got.State != tt.wantState {
				t.Errorf("State = %q, want %q", got.State, tt.wantState)
			}
			if diff := cmp.Diff(tt.wantRoles, got.RoleIDs()); diff != "" {
				t.Errorf("RoleIDs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMembership_Admitted(t *testing.T) {
	tests := []struct {
		state        guild.State
		allowPending bool
		want         bool
	}{
		{guild.StateMember, false, true},
		{guild.StateMember, true, true},
		{guild.StatePending, false, false},
		{guild.StatePending, true, true},
		{guild.StateAbsent, false, false},
		{guild.StateAbsent, true, false},
		{"", true, false},
	}
	for _, tt := range tests {
		m := guild.Membership{State: tt.state}
		if got := m.Admitted(tt.allowPending); got != tt.want {
			t.Errorf("Membership{%q}.Admitted(%t) = %t, want %t",
				tt.state, tt.allowPending, got, tt.want)
		}
	}
}

func TestMembership_RoleIDs(t *testing.T) {
	tests := []struct {
		name  string
		roles []string
		want  []string
	}{
		{"guild id left out", []string{guildID, "41771983423143936"},
			[]string{"41771983423143936"}},
		{"numeric order, no duplicates", []string{"100", "9", "100", "1234567890123456789"},
			[]string{"9", "100", "1234567890123456789"}},
		{"only @everyone", []string{guildID}, []string{}},
		{"none", nil, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			member := &discordgo.Member{GuildID: guildID, Roles: tt.roles}
			got := guild.Membership{State: guild.StateMember, Member: member}.RoleIDs()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("RoleIDs (-want +got):\n%s", diff)
			}
		})
	}

	if got := (guild.Membership{State: guild.StateAbsent}).RoleIDs(); got != nil {
		t.Errorf("absent RoleIDs = %v, want nil", got)
	}
}

func TestMembership_RoleIDs_lookupSetsGuild(t *testing.T) {
	// Discord's member body has no guild_id; Lookup fills it so @everyone can be left out.
	m := exampleMember(t)
	m.Roles = []string{guildID, "5"}
	got, err := guild.Lookup(t.Context(),
		fakeMembers{members: map[string]*discordgo.Member{nelly: m}}, guildID, nelly)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"5"}, got.RoleIDs()); diff != "" {
		t.Errorf("RoleIDs (-want +got):\n%s", diff)
	}
}
