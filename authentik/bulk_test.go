package authentik_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
)

const listRoute = "GET /api/v3/core/users/"

// newClient starts the Authentik stand-in, which checks every request and answer against
// Authentik's schema, and returns a client of it.
func newClient(t *testing.T) (*authentik.Client, *authentikstub.Server) {
	t.Helper()
	s, err := authentikstub.New(authentikstub.Options{Token: "ak-bulk-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		for _, v := range s.Violations() {
			t.Errorf("schema violation: %v", v)
		}
	})
	c, err := authentik.New(authentik.Options{URL: s.URL(), Token: "ak-bulk-test",
		SourceSlug: "discord"})
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func addUser(s *authentikstub.Server, name, discord string) int32 {
	attrs := `{"locale":"de"}`
	if discord != "" {
		attrs = `{"locale":"de","discord":` + discord + `}`
	}
	return s.AddUser(authentikstub.User{Username: name, IsActive: true,
		Attributes: json.RawMessage(attrs)})
}

func TestUsersByDiscordIDs(t *testing.T) {
	c, s := newClient(t)
	a := addUser(s, "a", `{"id":"100","roles":["1"]}`)
	b := addUser(s, "b", `{"id":"200","roles":[]}`)
	addUser(s, "c", `{"id":"300","roles":[]}`) // not asked for
	addUser(s, "d", `{"id":100}`)              // a number: not what the bridge writes
	addUser(s, "e", "")

	got, err := c.UsersByDiscordIDs(t.Context(), []string{"100", "200", "400"})
	if err != nil {
		t.Fatal(err)
	}
	if pks := slices.Sorted(maps.Keys(got)); !slices.Equal(pks, []int32{a, b}) {
		t.Fatalf("users %v, want %v", pks, []int32{a, b})
	}
	if l := string(got[a].Attributes["locale"]); l != `"de"` {
		t.Errorf("user %d: locale %s, want every attribute as stored", a, l)
	}
	if n := s.Counts().ByRoute[listRoute]; n != 1 {
		t.Errorf("%d list requests, want 1", n)
	}
}

// Asking for nothing, or for more IDs than one request carries, sends no request.
func TestUsersByDiscordIDs_Limits(t *testing.T) {
	c, s := newClient(t)
	got, err := c.UsersByDiscordIDs(t.Context(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("no IDs: %v, %v; want an empty answer", got, err)
	}
	ids := make([]string, authentik.MaxUsersByDiscordIDs+1)
	for i := range ids {
		ids[i] = fmt.Sprint(1000 + i)
	}
	if _, err := c.UsersByDiscordIDs(t.Context(), ids); err == nil ||
		!strings.Contains(err.Error(), "at most 50") {
		t.Errorf("%d IDs: %v, want an error naming the limit", len(ids), err)
	}
	if n := s.Counts().ByRoute[listRoute]; n != 0 {
		t.Errorf("%d list requests, want none", n)
	}
}

// An Authentik that drops the filter lists everyone; an answer of more than one page cannot
// be the users asked for either. Both are ErrFilterIgnored, so the caller reads one by one.
func TestUsersByDiscordIDs_FilterIgnored(t *testing.T) {
	t.Run("strangers in the answer", func(t *testing.T) {
		c, s := newClient(t)
		addUser(s, "a", `{"id":"100","roles":[]}`)
		addUser(s, "b", `{"id":"200","roles":[]}`)
		s.SetIgnoreAttributeFilter(true)
		_, err := c.UsersByDiscordIDs(t.Context(), []string{"100"})
		if !errors.Is(err, authentik.ErrFilterIgnored) {
			t.Errorf("err = %v, want ErrFilterIgnored", err)
		}
	})
	t.Run("more than one page", func(t *testing.T) {
		c, s := newClient(t)
		// 120 users claim one Discord ID: more than a page of 100 matches the filter.
		for i := range 120 {
			addUser(s, fmt.Sprint("u", i), `{"id":"100","roles":[]}`)
		}
		_, err := c.UsersByDiscordIDs(t.Context(), []string{"100"})
		if !errors.Is(err, authentik.ErrFilterIgnored) ||
			!strings.Contains(err.Error(), "more than one page") {
			t.Errorf("err = %v, want ErrFilterIgnored for more than one page", err)
		}
	})
}
