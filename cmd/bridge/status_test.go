package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/web"
)

const stubToken = "status-test-token"

// newStubSource builds the parts of a statusSource that talk to Authentik, against the
// stand-in with its schema checks on.
func newStubSource(t *testing.T) (*statusSource, *authentikstub.Server) {
	t.Helper()
	ak, err := authentikstub.New(authentikstub.Options{Token: stubToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, v := range ak.Violations() {
			t.Errorf("authentik schema violation: %s", v)
		}
		ak.Close()
	})
	client, err := authentik.New(authentik.Options{URL: ak.URL(), Token: stubToken,
		SourceSlug: "discord", HTTPClient: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.Authentik.URL = ak.URL()
	cfg.Authentik.Token = config.NewSecret(stubToken)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &statusSource{cfg: cfg, ak: client, hc: http.DefaultClient,
		rec:    reconcile.New(nil, client, nil, log, reconcile.Options{}),
		groups: &groupNames{ak: client}}
	return s, ak
}

func TestStatusSource_SearchByAuthentikUsername(t *testing.T) {
	s, ak := newStubSource(t)
	linked := ak.AddUser(authentikstub.User{Username: "nelly.n", Name: "Nelly", IsActive: true,
		Attributes: json.RawMessage(`{"discord":{"id":"80351110224678912"}}`)})
	// Written by hand as a number: its digits still name the account.
	numeric := ak.AddUser(authentikstub.User{Username: "nelly.old", IsActive: true,
		Attributes: json.RawMessage(`{"discord":{"id":80351110224678}}`)})
	ak.AddUser(authentikstub.User{Username: "nelly.unlinked", IsActive: true})
	ak.AddUser(authentikstub.User{Username: "bob", IsActive: true})

	res, err := s.Search(t.Context(), "nelly", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := &web.SearchResult{
		AuthentikSearched: true,
		// Alphabetical by the names the page shows, the Authentik usernames here.
		Hits: []web.SearchHit{
			{Entry: reconcile.Entry{DiscordID: "80351110224678912", UserPKs: []int32{linked}},
				Users: []web.LinkedUser{{PK: linked, Username: "nelly.n"}}},
			{Entry: reconcile.Entry{DiscordID: "80351110224678", UserPKs: []int32{numeric}},
				Users: []web.LinkedUser{{PK: numeric, Username: "nelly.old"}}},
		},
		Unlinked: []string{"nelly.unlinked"},
	}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("search (-want +got):\n%s", d)
	}
}

func TestStatusSource_SearchWhenAuthentikFails(t *testing.T) {
	s, ak := newStubSource(t)
	ak.FailNext(1, http.StatusBadGateway)
	res, err := s.Search(t.Context(), "nelly", 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.AuthentikSearched || res.AuthentikError != "search authentik users: status 502" {
		t.Errorf("got searched=%v error=%q, want the failure reported", res.AuthentikSearched,
			res.AuthentikError)
	}
}

func TestStatusSource_DownstreamGroups(t *testing.T) {
	s, ak := newStubSource(t)
	staff := ak.AddGroup(authentikstub.Group{Name: "staff"})
	admins := ak.AddGroup(authentikstub.Group{Name: "makerspace-admins",
		Attributes: json.RawMessage(`{"discord_role_id":"111"}`)})
	editors := ak.AddGroup(authentikstub.Group{Name: "makerspace-editors",
		Attributes: json.RawMessage(`{"discord_role_id":"222"}`)})
	pk := ak.AddUser(authentikstub.User{Username: "nelly", Name: "Nelly N", IsActive: true,
		Attributes: json.RawMessage(`{"avatar":"http://bridge.example/avatars/a.png",` +
			`"discord":{"id":"80351110224678912","username":"nelly_discord",` +
			`"global_name":"Nelly on Discord","nick":null,"roles":[]}}`)})
	ak.AddMember(staff, pk)
	ak.AddMember(editors, pk)

	up := reconcile.UserPlan{PK: pk, Username: "nelly",
		Add:    []reconcile.GroupChange{{Group: groupmatch.Group{UUID: admins}}},
		Remove: []reconcile.GroupChange{{Group: groupmatch.Group{UUID: editors}}}}
	got, last := s.memberUser(t.Context(), up)
	want := web.MemberUser{PK: pk, Username: "nelly", Name: "Nelly N",
		AvatarURL:   "http://bridge.example/avatars/a.png",
		GroupsNow:   []string{"makerspace-editors", "staff"},
		GroupsAfter: []string{"makerspace-admins", "staff"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("member user (-want +got):\n%s", d)
	}
	if last.Username != "nelly_discord" || last.display() != "Nelly on Discord" {
		t.Errorf("last Discord names = %q, %q; want nelly_discord, Nelly on Discord",
			last.Username, last.display())
	}
}

func TestUpstreamNames(t *testing.T) {
	cfg := &config.Config{}
	cfg.Discord.APIURL = "https://discord.com/api/v10"
	cfg.Authentik.URL = "https://auth.example.org"
	cfg.OIDC.Issuer = "https://auth.example.org/application/o/bridge/"
	want := map[string]string{"discord.com": "discord", "auth.example.org": "authentik"}
	if d := cmp.Diff(want, upstreamNames(cfg)); d != "" {
		t.Errorf("names (-want +got):\n%s", d)
	}
}

func TestRankHits(t *testing.T) {
	hit := func(id, discordUsername string, akUsernames ...string) web.SearchHit {
		h := web.SearchHit{Entry: reconcile.Entry{DiscordID: id, Username: discordUsername}}
		for i, u := range akUsernames {
			h.Users = append(h.Users, web.LinkedUser{PK: int32(i + 1), Username: u})
		}
		return h
	}
	hits := []web.SearchHit{
		hit("30", "zed"),
		hit("31", "Annie"),
		hit("32", "", "helga.b"), // a former member, named by her Authentik user
		hit("33", "ann"),
		hit("34", "bob", "ANN.admin"),
		hit("35", ""), // neither name known: "Discord ID 35"
	}
	tests := []struct {
		q    string
		want []string // Discord IDs in order
	}{
		{"ann", []string{"33", "31", "34", "35", "32", "30"}},
		{"ANN.ADMIN", []string{"34", "33", "31", "35", "32", "30"}},
		{"35", []string{"35", "33", "31", "34", "32", "30"}},
		{"nobody", []string{"33", "31", "34", "35", "32", "30"}},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			got := slices.Clone(hits)
			rankHits(tt.q, got)
			var ids []string
			for _, h := range got {
				ids = append(ids, h.Entry.DiscordID)
			}
			if d := cmp.Diff(tt.want, ids); d != "" {
				t.Errorf("order for %q (-want +got):\n%s", tt.q, d)
			}
		})
	}
}

func TestStatusSource_UsernamesOfPKs(t *testing.T) {
	s, ak := newStubSource(t)
	helga := ak.AddUser(authentikstub.User{Username: "helga.b", IsActive: true})
	mateo := ak.AddUser(authentikstub.User{Username: "mateo.g", IsActive: true})
	const gone = int32(99999) // deleted in Authentik since the last full pass
	hits := []web.SearchHit{
		{Entry: reconcile.Entry{DiscordID: "1", UserPKs: []int32{helga, gone}}},
		{Entry: reconcile.Entry{DiscordID: "2", UserPKs: []int32{mateo}}},
	}

	s.lookUpUsernames(t.Context(), hits)
	s.nameUsers(hits)
	want := [][]web.LinkedUser{
		{{PK: helga, Username: "helga.b"}, {PK: gone}},
		{{PK: mateo, Username: "mateo.g"}},
	}
	for i, h := range hits {
		if d := cmp.Diff(want[i], h.Users); d != "" {
			t.Errorf("hit %s users (-want +got):\n%s", h.Entry.DiscordID, d)
		}
	}

	// The second time the cache answers: Authentik is not asked again for known users.
	ak.ResetCounts()
	s.lookUpUsernames(t.Context(), hits[1:])
	if n := ak.Counts().Reads; n != 0 {
		t.Errorf("a second lookup of cached usernames read Authentik %d times, want 0", n)
	}
}

// roleList serves a fixed list of guild roles.
type roleList []*discordgo.Role

func (l roleList) Roles(context.Context, string) ([]*discordgo.Role, error) { return l, nil }

func TestStatusSource_MappingUnknownRolesStayManaged(t *testing.T) {
	s, ak := newStubSource(t)
	s.cfg.Discord.GuildID = "100"
	roles := roleList{{ID: "100", Name: "@everyone"},
		{ID: "111", Name: "Board", Color: 0xe74c3c, Position: 2},
		{ID: "222", Name: "Members", Position: 1}}
	s.roles = newRolesKeeper(roles, "100", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.roles.r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	ak.AddGroup(authentikstub.Group{Name: "admins",
		Attributes: json.RawMessage(`{"discord_role_id":"111"}`)})
	ak.AddGroup(authentikstub.Group{Name: "former-staff",
		Attributes: json.RawMessage(`{"discord_role_id":"717438513577984077"}`)})
	ak.AddGroup(authentikstub.Group{Name: "mixed",
		Attributes: json.RawMessage(`{"discord_role_id":["222","717438513577984077"]}`)})
	ak.AddGroup(authentikstub.Group{Name: "keyholders",
		Attributes: json.RawMessage(`{"discord_role_id":{"id":"222"}}`)})

	v, err := s.Mapping(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	missing := map[string][]string{}
	for _, g := range v.Groups {
		missing[g.Name] = g.Missing
	}
	wantMissing := map[string][]string{"admins": nil,
		"former-staff": {"717438513577984077"}, "mixed": {"717438513577984077"}}
	if d := cmp.Diff(wantMissing, missing); d != "" {
		t.Errorf("managed groups and their missing roles (-want +got):\n%s", d)
	}
	wantUnknown := []web.UnknownRole{{RoleID: "717438513577984077",
		Groups: []string{"former-staff", "mixed"}}}
	if d := cmp.Diff(wantUnknown, v.UnknownRoles); d != "" {
		t.Errorf("unknown roles (-want +got):\n%s", d)
	}
	if len(v.Invalid) != 1 || v.Invalid[0].GroupName != "keyholders" {
		t.Errorf("refused entries = %+v, want keyholders alone", v.Invalid)
	}

	// The Health tab counts from the same helpers.
	m, err := s.rec.Mapping(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	unknown := s.unknownRoles(m)
	if got := len(groupsNaming(m, unknown)); len(unknown) != 1 || got != 2 {
		t.Errorf("health counts %d unknown roles in %d groups, want 1 in 2", len(unknown), got)
	}
}
