package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"

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
		Hits: []web.SearchHit{
			{Entry: reconcile.Entry{DiscordID: "80351110224678912", UserPKs: []int32{linked}},
				Usernames: []string{"nelly.n"}},
			{Entry: reconcile.Entry{DiscordID: "80351110224678", UserPKs: []int32{numeric}},
				Usernames: []string{"nelly.old"}},
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
	pk := ak.AddUser(authentikstub.User{Username: "nelly", IsActive: true,
		Attributes: json.RawMessage(`{"avatar":"http://bridge.example/avatars/a.png"}`)})
	ak.AddMember(staff, pk)
	ak.AddMember(editors, pk)

	up := reconcile.UserPlan{PK: pk, Username: "nelly",
		Add:    []reconcile.GroupChange{{Group: groupmatch.Group{UUID: admins}}},
		Remove: []reconcile.GroupChange{{Group: groupmatch.Group{UUID: editors}}}}
	got := s.memberUser(t.Context(), up)
	want := web.MemberUser{PK: pk, Username: "nelly",
		AvatarURL:   "http://bridge.example/avatars/a.png",
		GroupsNow:   []string{"makerspace-editors", "staff"},
		GroupsAfter: []string{"makerspace-admins", "staff"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("member user (-want +got):\n%s", d)
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
