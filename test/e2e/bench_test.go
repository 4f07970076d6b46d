package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/reconcile/sqlitestore"
	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
	"github.com/discord-authentik-bridge/bridge/web"
)

// BenchmarkSyncHook measures the sync hook of a member whose state is already correct, the
// steady state of logins: the whole path over loopback HTTP, in one process, with the
// stand-ins answering without delay and without schema validation.
func BenchmarkSyncHook(b *testing.B) {
	ak, err := authentikstub.New(authentikstub.Options{Token: akToken, NoValidate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ak.Close()
	dc, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: botToken})
	if err != nil {
		b.Fatal(err)
	}
	defer dc.Close()

	roles := []string{"1187654321098765431", "1187654321098765432", "1187654321098765433"}
	for i, r := range roles {
		ak.AddGroup(authentikstub.Group{Name: fmt.Sprintf("group-%d", i),
			Attributes: json.RawMessage(`{"discord_role_id":"` + r + `"}`)})
	}
	m := discordstub.ExampleMember()
	m.User.ID, m.Roles = nellyID, roles[:2]
	if err := dc.SetMember(m); err != nil {
		b.Fatal(err)
	}
	dc.SetAvatar("avatars/"+nellyID+"/"+*m.User.Avatar+".png", "image/png", readImage(b, "tux.png"))
	pk := ak.AddUser(authentikstub.User{Username: "nelly", IsActive: true,
		Attributes: json.RawMessage(`{"employee_number":1234567890123456789}`)})

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	dcl, err := discord.NewClient(discord.Options{Token: botToken, APIURL: dc.APIURL(), HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	akc, err := authentik.New(authentik.Options{URL: ak.URL(), Token: akToken,
		SourceSlug: "discord", HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	store, err := sqlitestore.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"), log)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	local, err := avatars.NewLocalStore(filepath.Join(b.TempDir(), "avatars"), "http://127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	av, err := avatars.New(local, log, avatars.Options{CDNBase: dc.CDNURL()})
	if err != nil {
		b.Fatal(err)
	}
	// Wired as serve wires it: SQLite store and hosted avatars.
	rec := reconcile.New(dcl, akc, store, log, reconcile.Options{GuildID: guildID, Avatars: av})
	srv := web.New(web.Options{WebhookSecret: webhookSecret, GuildID: guildID, Discord: dcl,
		Reconciler: rec, Logger: log})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	body := []byte(fmt.Sprintf(`{"discord_id":%q,"user_pk":%d}`, nellyID, pk))
	post := func(c *http.Client) (string, error) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/authentik/sync", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+webhookSecret)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct{ Status string }
		err = json.NewDecoder(resp.Body).Decode(&out)
		return out.Status, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	if st, err := post(client); err != nil || st != "changed" {
		b.Fatalf("first sync: %q %v", st, err)
	}
	ak.ResetCounts()
	dc.ResetCounts()

	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if st, err := post(client); err != nil || st != "unchanged" {
				b.Errorf("sync: %q %v", st, err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(dc.Counts().Total)/float64(b.N), "discord-calls/op")
	b.ReportMetric(float64(ak.Counts().Reads)/float64(b.N), "authentik-reads/op")
	b.ReportMetric(float64(ak.Counts().Writes)/float64(b.N), "authentik-writes/op")
}
