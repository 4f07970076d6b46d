package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestHooks_BadInput sends every malformed call a hook can get. Each gets a clear answer and
// none reaches Authentik.
func TestHooks_BadInput(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	good := "Bearer " + webhookSecret
	big := append([]byte(`{"discord_id":"`+nellyID+`","pad":"`),
		bytes.Repeat([]byte("x"), 70<<10)...)
	big = append(big, `"}`...)

	for _, tc := range []struct {
		name, path, auth string
		body             string
		raw              []byte
		status           int
		msg              string
	}{
		{"no secret", "/v1/authentik/gate", "", `{"discord_id":"1"}`, nil, 401, "bearer"},
		{"wrong secret", "/v1/authentik/sync", "Bearer nope", `{"discord_id":"1","user_pk":1}`, nil, 401, "bearer"},
		{"basic auth", "/v1/authentik/gate", "Basic " + webhookSecret, `{"discord_id":"1"}`, nil, 401, "bearer"},
		{"body over 64 KiB", "/v1/authentik/gate", good, "", big, 413, "exceeds"},
		{"malformed JSON", "/v1/authentik/gate", good, `{"discord_id":`, nil, 400, "not a JSON object"},
		{"not an object", "/v1/authentik/sync", good, `[1,2]`, nil, 400, "JSON"},
		{"ID as a number", "/v1/authentik/gate", good, `{"discord_id":80351110224678912}`, nil, 400, "must be a JSON string"},
		{"ID missing", "/v1/authentik/gate", good, `{}`, nil, 400, "discord_id is required"},
		{"ID not digits", "/v1/authentik/gate", good, `{"discord_id":"nelly"}`, nil, 400, "only digits"},
		{"user_pk missing", "/v1/authentik/sync", good, `{"discord_id":"` + nellyID + `"}`, nil, 400, "user_pk"},
		{"user_pk a string", "/v1/authentik/sync", good, `{"discord_id":"` + nellyID + `","user_pk":"7"}`, nil, 400, "user_pk must be a JSON integer"},
		{"two values", "/v1/authentik/gate", good, `{"discord_id":"1"}{}`, nil, 400, "more than one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.raw
			if body == nil {
				body = []byte(tc.body)
			}
			status, out := e.post(tc.path, tc.auth, body)
			if status != tc.status {
				t.Errorf("status = %d, want %d (%v)", status, tc.status, out)
			}
			if msg, _ := out["message"].(string); !strings.Contains(msg, tc.msg) {
				t.Errorf("message = %q, want it to contain %q", msg, tc.msg)
			}
		})
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Errorf("bad input caused %d Authentik writes", c.Writes)
	}
	if got := string(e.ak.UserAttributes(w.nelly)); got != nellyAttributes {
		t.Errorf("attributes changed by bad input: %s", got)
	}
}

// TestSyncHook_AuthentikFaults: while Authentik refuses connections or answers 500 the hook
// says so and writes nothing wrong; once it is back the same call converges.
func TestSyncHook_AuthentikFaults(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	call := map[string]any{"discord_id": nellyID, "user_pk": w.nelly}

	e.ak.SetDown(true)
	status, body := e.hook("/v1/authentik/sync", call)
	if status != http.StatusServiceUnavailable || body["status"] != "error" {
		t.Errorf("Authentik down: %d %v, want 503 error", status, body)
	}
	if msg, _ := body["message"].(string); !strings.Contains(msg, "refused") {
		t.Errorf("message %q does not say the connection was refused", msg)
	}
	e.ak.SetDown(false)

	e.ak.FailNext(1000, http.StatusInternalServerError)
	status, body = e.hook("/v1/authentik/sync", call)
	if status != http.StatusServiceUnavailable || body["status"] != "error" {
		t.Errorf("Authentik 500: %d %v, want 503 error", status, body)
	}
	if msg, _ := body["message"].(string); !strings.Contains(msg, "status 500") {
		t.Errorf("message %q does not name the 500", msg)
	}
	if got := string(e.ak.UserAttributes(w.nelly)); got != nellyAttributes {
		t.Fatalf("attributes changed while Authentik failed: %s", got)
	}
	e.ak.FailNext(0, 0)

	// The failed hook calls were queued for a retry with back-off, which may win the race
	// with this call; either way the user converges.
	status, body = e.hook("/v1/authentik/sync", call)
	if status != http.StatusOK || (body["status"] != "changed" && body["status"] != "unchanged") {
		t.Fatalf("after recovery: %d %v, want 200 changed or unchanged", status, body)
	}
	if !contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Error("after recovery the admin group is missing")
	}
}

// TestSyncHook_DiscordRateLimitThenOK: a 429 whose retry_after fits the deadline is waited
// out and the sync completes.
func TestSyncHook_DiscordRateLimitThenOK(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	e.dc.RateLimitNext(1, 0.2, false)
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK || body["status"] != "changed" {
		t.Fatalf("sync after 429 = %d %v, want 200 changed", status, body)
	}
	if c := e.dc.Counts(); c.RateLimited != 1 {
		t.Errorf("rate-limited answers = %d, want 1", c.RateLimited)
	}
}

// TestSyncHook_SlowDiscordAnswersQueued: a 429 longer than the hook's deadline gets "queued"
// within the deadline rather than a hung login.
func TestSyncHook_SlowDiscordAnswersQueued(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start("BRIDGE_SYNC_DEADLINE=300ms")
	e.dc.RateLimitNext(1, 1.0, false)
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusAccepted || body["status"] != "queued" {
		t.Fatalf("sync = %d %v, want 202 queued", status, body)
	}
	// The late work finishes in the background.
	waitFor(t, "the background sync to add the admin group", func() bool {
		return contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins")
	})
}

// TestGate_DiscordDown: the gate fails closed with a message a person can read.
func TestGate_DiscordDown(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	e.start()
	e.dc.FailNext(100, http.StatusBadGateway)
	status, body := e.hook("/v1/authentik/gate", map[string]string{"discord_id": nellyID})
	if status != http.StatusServiceUnavailable || body["allowed"] != false ||
		body["reason"] != "discord_unavailable" {
		t.Errorf("gate with Discord down = %d %v", status, body)
	}
	e.dc.FailNext(0, 0)
}

// TestSyncHook_GarbageFromDiscord: a 200 that is not JSON is an error, not a crash.
func TestSyncHook_GarbageFromDiscord(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	e.dc.SetGarbage(10)
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusServiceUnavailable {
		t.Errorf("sync with garbage from Discord = %d %v, want 503", status, body)
	}
	e.dc.SetGarbage(0)
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Errorf("garbage from Discord caused %d writes", c.Writes)
	}
	raw, _ := json.Marshal(body)
	if !strings.Contains(string(raw), "discord") {
		t.Errorf("answer does not say Discord failed: %s", raw)
	}
}
