package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecret_Reveal(t *testing.T) {
	s := NewSecret(discordToken)
	if got := s.Reveal(); got != discordToken {
		t.Errorf("Reveal() = %q, want %q", got, discordToken)
	}
	if !s.IsSet() || NewSecret("").IsSet() {
		t.Errorf("IsSet: got %v for a value and %v for empty, want true and false",
			s.IsSet(), NewSecret("").IsSet())
	}
}

func loadedConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := Load(lookupIn(with(minimalEnv(), map[string]string{
		"BRIDGE_AVATAR_STORE": "s3", "BRIDGE_S3_ENDPOINT": "s3.example.com",
		"BRIDGE_S3_BUCKET": "avatars", "BRIDGE_S3_PUBLIC_URL": "https://cdn.example.com",
		"BRIDGE_S3_ACCESS_KEY": s3Access, "BRIDGE_S3_SECRET_KEY": s3Secret,
		"BRIDGE_OIDC_ISSUER": "https://auth.example.com/app/", "BRIDGE_OIDC_CLIENT_ID": "bridge",
		"BRIDGE_OIDC_CLIENT_SECRET": oidcSecret, "BRIDGE_ADMIN_GROUPS": "admins",
	})))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func assertRedacted(t *testing.T, what, out string, wantSecrets int) {
	t.Helper()
	for _, s := range secretValues {
		if strings.Contains(out, s) {
			t.Errorf("%s leaks %q: %s", what, s, out)
		}
	}
	if got := strings.Count(out, "[redacted]"); got < wantSecrets {
		t.Errorf("%s shows [redacted] %d times, want at least %d: %s", what, got, wantSecrets, out)
	}
}

func TestSecret_Format(t *testing.T) {
	cfg := loadedConfig(t)
	s := cfg.Discord.Token
	values := []struct {
		name    string
		value   any
		secrets int
	}{
		{"Secret", s, 1},
		{"*Secret", &s, 1},
		{"Config", *cfg, 6},
		{"*Config", cfg, 6},
		{"Discord", cfg.Discord, 1},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20s", "%-8v", "%10.3q"}
	for _, v := range values {
		for _, verb := range verbs {
			t.Run(v.name+" "+verb, func(t *testing.T) {
				assertRedacted(t, verb, fmt.Sprintf(verb, v.value), v.secrets)
			})
		}
	}

	if got := fmt.Sprintf("%q", s); got != `"[redacted]"` {
		t.Errorf("%%q = %s, want \"[redacted]\"", got)
	}
	if got := s.GoString(); got != "[redacted]" {
		t.Errorf("GoString() = %q", got)
	}
	if got := s.String(); got != "[redacted]" {
		t.Errorf("String() = %q", got)
	}
}

func TestSecret_Marshal(t *testing.T) {
	cfg := loadedConfig(t)

	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	assertRedacted(t, "JSON", string(b), 6)

	var decoded struct{ Discord struct{ Token string } }
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.Discord.Token != "[redacted]" {
		t.Errorf("JSON token = %q, want [redacted]", decoded.Discord.Token)
	}

	text, err := cfg.Webhook.Secret.MarshalText()
	if err != nil || string(text) != "[redacted]" {
		t.Errorf("MarshalText() = %q, %v", text, err)
	}
}

func TestSecret_Slog(t *testing.T) {
	cfg := loadedConfig(t)
	handlers := []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	}
	for _, h := range handlers {
		t.Run(h.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(h.new(&buf))

			log.Info("loaded", "token", cfg.Discord.Token, "secret_ptr", &cfg.Webhook.Secret,
				slog.Any("discord", cfg.Discord), slog.Any("config", cfg))
			log.With("s3", cfg.S3).Info("store")

			// token, secret_ptr, discord (1), config (6), s3 (2)
			assertRedacted(t, h.name+" log", buf.String(), 11)
		})
	}
}
