package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	discordToken   = "discord-token-VALUE-1"
	authentikToken = "authentik-token-VALUE-2"
	webhookSecret  = "webhook-secret-VALUE-3-long-enough"
	s3Access       = "s3-access-VALUE-4"
	s3Secret       = "s3-secret-VALUE-5"
	oidcSecret     = "oidc-secret-VALUE-6"
)

// secretValues are the secret values the tests use; no error or printed form may contain them.
var secretValues = []string{discordToken, authentikToken, webhookSecret, s3Access, s3Secret, oidcSecret}

func minimalEnv() map[string]string {
	return map[string]string{
		"BRIDGE_DISCORD_TOKEN":    discordToken,
		"BRIDGE_DISCORD_GUILD_ID": "1187654321098765431",
		"BRIDGE_AUTHENTIK_URL":    "https://auth.example.com/",
		"BRIDGE_AUTHENTIK_TOKEN":  authentikToken,
		"BRIDGE_WEBHOOK_SECRET":   webhookSecret,
	}
}

func with(base map[string]string, changes map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range changes {
		if v == "<unset>" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

var secretCmp = cmp.Comparer(func(a, b Secret) bool { return a.Reveal() == b.Reveal() })

// problemVars returns the variable of every problem in err, sorted, failing the test on an
// error that is not a *VarError or that leaks a secret.
func problemVars(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		errs = multi.Unwrap()
	} else {
		errs = []error{err}
	}
	var vars []string
	for _, e := range errs {
		var ve *VarError
		if !errors.As(e, &ve) {
			t.Errorf("problem %q is not a *VarError", e)
			continue
		}
		if !strings.HasPrefix(e.Error(), ve.Var+": ") {
			t.Errorf("problem %q does not start with its variable %s", e, ve.Var)
		}
		for _, s := range secretValues {
			if strings.Contains(e.Error(), s) {
				t.Errorf("problem %q contains a secret value", e)
			}
		}
		vars = append(vars, ve.Var)
	}
	sort.Strings(vars)
	return vars
}

func TestLoad_Defaults(t *testing.T) {
	got, err := Load(lookupIn(minimalEnv()))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	want := &Config{
		Discord: Discord{
			Token:   NewSecret(discordToken),
			GuildID: "1187654321098765431",
			APIURL:  "https://discord.com/api/v10",
			CDNURL:  "https://cdn.discordapp.com",
		},
		Authentik: Authentik{
			URL:        "https://auth.example.com",
			Token:      NewSecret(authentikToken),
			SourceSlug: "discord",
		},
		Webhook:   Webhook{Secret: NewSecret(webhookSecret), SyncDeadline: 5 * time.Second},
		Listen:    ":8080",
		PublicURL: "http://localhost:8080",
		DataDir:   "./data",
		Avatar:    Avatar{Store: "local", Size: 64, GCAfter: 168 * time.Hour},
		S3:        S3{Region: "us-east-1", UseSSL: true},
		Sync: Sync{
			ResyncInterval:  time.Hour,
			OnLeave:         "remove_groups",
			MaxRemovalShare: 0.2,
			MappingRefresh:  30 * time.Second,
		},
		Log:     Log{Level: "info", Format: "text"},
		Gateway: true,
	}
	if diff := cmp.Diff(want, got, secretCmp); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoad_EveryVariable(t *testing.T) {
	env := with(minimalEnv(), map[string]string{
		"BRIDGE_DISCORD_API_URL":        "http://127.0.0.1:9001/api/v10/",
		"BRIDGE_DISCORD_CDN_URL":        "http://127.0.0.1:9002",
		"BRIDGE_AUTHENTIK_SOURCE_SLUG":  "discord-prod",
		"BRIDGE_SYNC_DEADLINE":          "2500ms",
		"BRIDGE_LISTEN":                 "127.0.0.1:9090",
		"BRIDGE_PUBLIC_URL":             "https://bridge.example.com/",
		"BRIDGE_DATA_DIR":               "/var/lib/bridge",
		"BRIDGE_AVATAR_STORE":           "s3",
		"BRIDGE_AVATAR_SIZE":            "128",
		"BRIDGE_AVATAR_PREFER_GUILD":    "true",
		"BRIDGE_AVATAR_GC_AFTER":        "24h",
		"BRIDGE_S3_ENDPOINT":            "s3.example.com:9000",
		"BRIDGE_S3_BUCKET":              "avatars",
		"BRIDGE_S3_REGION":              "eu-central-1",
		"BRIDGE_S3_PREFIX":              "/bridge/",
		"BRIDGE_S3_PUBLIC_URL":          "https://cdn.example.com/avatars/",
		"BRIDGE_S3_ACCESS_KEY":          s3Access,
		"BRIDGE_S3_SECRET_KEY":          s3Secret,
		"BRIDGE_S3_USE_SSL":             "false",
		"BRIDGE_OIDC_ISSUER":            "https://auth.example.com/application/o/bridge/",
		"BRIDGE_OIDC_CLIENT_ID":         "bridge",
		"BRIDGE_OIDC_CLIENT_SECRET":     oidcSecret,
		"BRIDGE_ADMIN_GROUPS":           "admins, bridge operators",
		"BRIDGE_RESYNC_INTERVAL":        "15m",
		"BRIDGE_ON_LEAVE":               "deactivate",
		"BRIDGE_LEAVE_GRACE":            "72h",
		"BRIDGE_REVOKE_ON_LOSS":         "true",
		"BRIDGE_MAX_REMOVAL_SHARE":      "0.5",
		"BRIDGE_ALLOW_SUPERUSER_GROUPS": "true",
		"BRIDGE_GATE_ALLOW_PENDING":     "true",
		"BRIDGE_SET_NAME":               "true",
		"BRIDGE_MAPPING_REFRESH":        "1m",
		"BRIDGE_APP_ROLES":              "admin=group-a,group-b; editor = group-c ;",
		"BRIDGE_LOG_LEVEL":              "debug",
		"BRIDGE_LOG_FORMAT":             "json",
		"BRIDGE_DEV_NO_LOGIN":           "true",
	})
	got, err := Load(lookupIn(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	want := &Config{
		Discord: Discord{
			Token:   NewSecret(discordToken),
			GuildID: "1187654321098765431",
			APIURL:  "http://127.0.0.1:9001/api/v10",
			CDNURL:  "http://127.0.0.1:9002",
		},
		Authentik: Authentik{
			URL:        "https://auth.example.com",
			Token:      NewSecret(authentikToken),
			SourceSlug: "discord-prod",
		},
		Webhook:   Webhook{Secret: NewSecret(webhookSecret), SyncDeadline: 2500 * time.Millisecond},
		Listen:    "127.0.0.1:9090",
		PublicURL: "https://bridge.example.com",
		DataDir:   "/var/lib/bridge",
		Avatar:    Avatar{Store: "s3", Size: 128, PreferGuild: true, GCAfter: 24 * time.Hour},
		S3: S3{
			Endpoint:  "s3.example.com:9000",
			Bucket:    "avatars",
			Region:    "eu-central-1",
			Prefix:    "bridge",
			PublicURL: "https://cdn.example.com/avatars",
			AccessKey: NewSecret(s3Access),
			SecretKey: NewSecret(s3Secret),
			UseSSL:    false,
		},
		OIDC: OIDC{
			Issuer:       "https://auth.example.com/application/o/bridge/",
			ClientID:     "bridge",
			ClientSecret: NewSecret(oidcSecret),
			AdminGroups:  []string{"admins", "bridge operators"},
		},
		Sync: Sync{
			ResyncInterval:       15 * time.Minute,
			OnLeave:              "deactivate",
			LeaveGrace:           72 * time.Hour,
			RevokeOnLoss:         true,
			MaxRemovalShare:      0.5,
			AllowSuperuserGroups: true,
			GateAllowPending:     true,
			SetName:              true,
			MappingRefresh:       time.Minute,
		},
		AppRoles: []AppRole{
			{Name: "admin", Groups: []string{"group-a", "group-b"}},
			{Name: "editor", Groups: []string{"group-c"}},
		},
		Log:        Log{Level: "debug", Format: "json"},
		Gateway:    true,
		DevNoLogin: true,
	}
	if diff := cmp.Diff(want, got, secretCmp); diff != "" {
		t.Errorf("Load() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoad_EmptyMeansDefault(t *testing.T) {
	env := with(minimalEnv(), map[string]string{"BRIDGE_AVATAR_SIZE": "", "BRIDGE_ON_LEAVE": ""})
	got, err := Load(lookupIn(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Avatar.Size != 64 || got.Sync.OnLeave != OnLeaveRemoveGroups {
		t.Errorf("empty values: got size %d, on_leave %q; want the defaults 64, remove_groups",
			got.Avatar.Size, got.Sync.OnLeave)
	}
}

func TestLoad_Problems(t *testing.T) {
	tests := []struct {
		name    string
		changes map[string]string
		want    []string
	}{
		{"discord token missing", map[string]string{"BRIDGE_DISCORD_TOKEN": "<unset>"},
			[]string{"BRIDGE_DISCORD_TOKEN"}},
		{"discord token with Bot prefix", map[string]string{"BRIDGE_DISCORD_TOKEN": "Bot " + discordToken},
			[]string{"BRIDGE_DISCORD_TOKEN"}},
		{"guild id missing", map[string]string{"BRIDGE_DISCORD_GUILD_ID": "<unset>"},
			[]string{"BRIDGE_DISCORD_GUILD_ID"}},
		{"guild id letters", map[string]string{"BRIDGE_DISCORD_GUILD_ID": "12a4"},
			[]string{"BRIDGE_DISCORD_GUILD_ID"}},
		{"guild id too long", map[string]string{"BRIDGE_DISCORD_GUILD_ID": "123456789012345678901"},
			[]string{"BRIDGE_DISCORD_GUILD_ID"}},
		{"guild id beyond uint64", map[string]string{"BRIDGE_DISCORD_GUILD_ID": "99999999999999999999"},
			[]string{"BRIDGE_DISCORD_GUILD_ID"}},
		{"api url relative", map[string]string{"BRIDGE_DISCORD_API_URL": "/api/v10"},
			[]string{"BRIDGE_DISCORD_API_URL"}},
		{"cdn url ftp", map[string]string{"BRIDGE_DISCORD_CDN_URL": "ftp://cdn.example.com"},
			[]string{"BRIDGE_DISCORD_CDN_URL"}},
		{"authentik url missing", map[string]string{"BRIDGE_AUTHENTIK_URL": "<unset>"},
			[]string{"BRIDGE_AUTHENTIK_URL"}},
		{"authentik url without scheme", map[string]string{"BRIDGE_AUTHENTIK_URL": "auth.example.com"},
			[]string{"BRIDGE_AUTHENTIK_URL"}},
		{"authentik url with query", map[string]string{"BRIDGE_AUTHENTIK_URL": "https://a.example?x=1"},
			[]string{"BRIDGE_AUTHENTIK_URL"}},
		{"authentik token missing", map[string]string{"BRIDGE_AUTHENTIK_TOKEN": "<unset>"},
			[]string{"BRIDGE_AUTHENTIK_TOKEN"}},
		{"source slug with slash", map[string]string{"BRIDGE_AUTHENTIK_SOURCE_SLUG": "dis/cord"},
			[]string{"BRIDGE_AUTHENTIK_SOURCE_SLUG"}},
		{"webhook secret missing", map[string]string{"BRIDGE_WEBHOOK_SECRET": "<unset>"},
			[]string{"BRIDGE_WEBHOOK_SECRET"}},
		{"webhook secret weak", map[string]string{"BRIDGE_WEBHOOK_SECRET": "fifteen-chars15"},
			[]string{"BRIDGE_WEBHOOK_SECRET"}},
		{"sync deadline not a duration", map[string]string{"BRIDGE_SYNC_DEADLINE": "5"},
			[]string{"BRIDGE_SYNC_DEADLINE"}},
		{"sync deadline zero", map[string]string{"BRIDGE_SYNC_DEADLINE": "0s"},
			[]string{"BRIDGE_SYNC_DEADLINE"}},
		{"listen without port", map[string]string{"BRIDGE_LISTEN": "localhost"},
			[]string{"BRIDGE_LISTEN"}},
		{"listen port out of range", map[string]string{"BRIDGE_LISTEN": ":70000"},
			[]string{"BRIDGE_LISTEN"}},
		{"listen port 0 without public url", map[string]string{"BRIDGE_LISTEN": "127.0.0.1:0"},
			[]string{"BRIDGE_PUBLIC_URL"}},
		{"public url with credentials",
			map[string]string{"BRIDGE_PUBLIC_URL": "https://user:" + webhookSecret + "@bridge.example"},
			[]string{"BRIDGE_PUBLIC_URL"}},
		{"avatar store unknown", map[string]string{"BRIDGE_AVATAR_STORE": "gcs"},
			[]string{"BRIDGE_AVATAR_STORE"}},
		{"avatar size small", map[string]string{"BRIDGE_AVATAR_SIZE": "8"},
			[]string{"BRIDGE_AVATAR_SIZE"}},
		{"avatar size large", map[string]string{"BRIDGE_AVATAR_SIZE": "2048"},
			[]string{"BRIDGE_AVATAR_SIZE"}},
		{"avatar size not a number", map[string]string{"BRIDGE_AVATAR_SIZE": "64px"},
			[]string{"BRIDGE_AVATAR_SIZE"}},
		{"prefer guild not a bool", map[string]string{"BRIDGE_AVATAR_PREFER_GUILD": "yes please"},
			[]string{"BRIDGE_AVATAR_PREFER_GUILD"}},
		{"s3 store without settings", map[string]string{"BRIDGE_AVATAR_STORE": "s3"},
			[]string{"BRIDGE_S3_ACCESS_KEY", "BRIDGE_S3_BUCKET", "BRIDGE_S3_ENDPOINT",
				"BRIDGE_S3_PUBLIC_URL", "BRIDGE_S3_SECRET_KEY"}},
		{"s3 endpoint with scheme and bad bucket", map[string]string{
			"BRIDGE_AVATAR_STORE": "s3", "BRIDGE_S3_ENDPOINT": "https://s3.example.com",
			"BRIDGE_S3_BUCKET": "Avatars", "BRIDGE_S3_ACCESS_KEY": s3Access,
			"BRIDGE_S3_SECRET_KEY": s3Secret, "BRIDGE_S3_PUBLIC_URL": "https://cdn.example.com",
		}, []string{"BRIDGE_S3_BUCKET", "BRIDGE_S3_ENDPOINT"}},
		{"s3 settings ignored for local store", map[string]string{"BRIDGE_S3_ENDPOINT": "https://x"}, nil},
		{"oidc issuer only", map[string]string{"BRIDGE_OIDC_ISSUER": "https://auth.example.com/app/"},
			[]string{"BRIDGE_ADMIN_GROUPS", "BRIDGE_OIDC_CLIENT_ID", "BRIDGE_OIDC_CLIENT_SECRET"}},
		{"admin groups only", map[string]string{"BRIDGE_ADMIN_GROUPS": "admins"},
			[]string{"BRIDGE_OIDC_CLIENT_ID", "BRIDGE_OIDC_CLIENT_SECRET", "BRIDGE_OIDC_ISSUER"}},
		{"oidc complete", map[string]string{
			"BRIDGE_OIDC_ISSUER": "https://auth.example.com/app/", "BRIDGE_OIDC_CLIENT_ID": "id",
			"BRIDGE_OIDC_CLIENT_SECRET": oidcSecret, "BRIDGE_ADMIN_GROUPS": "admins",
		}, nil},
		{"oidc empty admin group", map[string]string{
			"BRIDGE_OIDC_ISSUER": "https://auth.example.com/app/", "BRIDGE_OIDC_CLIENT_ID": "id",
			"BRIDGE_OIDC_CLIENT_SECRET": oidcSecret, "BRIDGE_ADMIN_GROUPS": "admins,,ops",
		}, []string{"BRIDGE_ADMIN_GROUPS"}},
		{"resync interval negative", map[string]string{"BRIDGE_RESYNC_INTERVAL": "-1h"},
			[]string{"BRIDGE_RESYNC_INTERVAL"}},
		{"on leave unknown", map[string]string{"BRIDGE_ON_LEAVE": "delete"},
			[]string{"BRIDGE_ON_LEAVE"}},
		{"leave grace negative", map[string]string{"BRIDGE_LEAVE_GRACE": "-5m"},
			[]string{"BRIDGE_LEAVE_GRACE"}},
		{"revoke not a bool", map[string]string{"BRIDGE_REVOKE_ON_LOSS": "sometimes"},
			[]string{"BRIDGE_REVOKE_ON_LOSS"}},
		{"share zero", map[string]string{"BRIDGE_MAX_REMOVAL_SHARE": "0"},
			[]string{"BRIDGE_MAX_REMOVAL_SHARE"}},
		{"share above one", map[string]string{"BRIDGE_MAX_REMOVAL_SHARE": "1.5"},
			[]string{"BRIDGE_MAX_REMOVAL_SHARE"}},
		{"share NaN", map[string]string{"BRIDGE_MAX_REMOVAL_SHARE": "NaN"},
			[]string{"BRIDGE_MAX_REMOVAL_SHARE"}},
		{"share one", map[string]string{"BRIDGE_MAX_REMOVAL_SHARE": "1"}, nil},
		{"share percent", map[string]string{"BRIDGE_MAX_REMOVAL_SHARE": "20%"},
			[]string{"BRIDGE_MAX_REMOVAL_SHARE"}},
		{"mapping refresh zero", map[string]string{"BRIDGE_MAPPING_REFRESH": "0"},
			[]string{"BRIDGE_MAPPING_REFRESH"}},
		{"gc after zero", map[string]string{"BRIDGE_AVATAR_GC_AFTER": "0s"},
			[]string{"BRIDGE_AVATAR_GC_AFTER"}},
		{"log level unknown", map[string]string{"BRIDGE_LOG_LEVEL": "trace"},
			[]string{"BRIDGE_LOG_LEVEL"}},
		{"log format unknown", map[string]string{"BRIDGE_LOG_FORMAT": "logfmt"},
			[]string{"BRIDGE_LOG_FORMAT"}},
		{"dev no login on every interface", map[string]string{"BRIDGE_DEV_NO_LOGIN": "true"},
			[]string{"BRIDGE_DEV_NO_LOGIN"}},
		{"dev no login on 0.0.0.0",
			map[string]string{"BRIDGE_DEV_NO_LOGIN": "true", "BRIDGE_LISTEN": "0.0.0.0:8080"},
			[]string{"BRIDGE_DEV_NO_LOGIN"}},
		{"dev no login on loopback",
			map[string]string{"BRIDGE_DEV_NO_LOGIN": "true", "BRIDGE_LISTEN": "127.0.0.1:8080"}, nil},
		{"dev no login on localhost",
			map[string]string{"BRIDGE_DEV_NO_LOGIN": "true", "BRIDGE_LISTEN": "localhost:8080"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(lookupIn(with(minimalEnv(), tt.changes)))

			got := problemVars(t, err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problem variables (-want +got):\n%s\nerror: %v", diff, err)
			}
			if (err == nil) != (cfg != nil) {
				t.Errorf("Load returned config %v with error %v; want exactly one of them",
					cfg != nil, err)
			}
		})
	}
}

func TestLoad_EveryProblemAtOnce(t *testing.T) {
	env := map[string]string{
		// BRIDGE_DISCORD_TOKEN and BRIDGE_AUTHENTIK_TOKEN missing: 2
		"BRIDGE_DISCORD_GUILD_ID":  "guild",                  // 3
		"BRIDGE_AUTHENTIK_URL":     "ftp://auth.example.com", // 4
		"BRIDGE_WEBHOOK_SECRET":    "short",                  // 5
		"BRIDGE_S3_USE_SSL":        "maybe",                  // 6 (parse)
		"BRIDGE_RESYNC_INTERVAL":   "forever",                // 7 (parse)
		"BRIDGE_AVATAR_SIZE":       "8",                      // 8
		"BRIDGE_AVATAR_STORE":      "s3",                     // 9-13: five S3 settings missing
		"BRIDGE_MAX_REMOVAL_SHARE": "2",                      // 14
		"BRIDGE_ON_LEAVE":          "ban",                    // 15
		"BRIDGE_OIDC_CLIENT_ID":    "bridge",                 // 16-18: issuer, secret, groups
		"BRIDGE_DEV_NO_LOGIN":      "true",                   // 19
		"BRIDGE_APP_ROLES":         "admin;editor=;=x",       // 20-22
		"BRIDGE_LOG_FORMAT":        "xml",                    // 23
		"BRIDGE_SYNC_DEADLINE":     "soon",                   // 24 (parse)
		"BRIDGE_LISTEN":            "nowhere",                // 25
	}
	_, err := Load(lookupIn(env))

	got := problemVars(t, err)
	want := []string{
		"BRIDGE_ADMIN_GROUPS",
		"BRIDGE_APP_ROLES",
		"BRIDGE_APP_ROLES",
		"BRIDGE_APP_ROLES",
		"BRIDGE_AUTHENTIK_TOKEN",
		"BRIDGE_AUTHENTIK_URL",
		"BRIDGE_AVATAR_SIZE",
		"BRIDGE_DEV_NO_LOGIN",
		"BRIDGE_DISCORD_GUILD_ID",
		"BRIDGE_DISCORD_TOKEN",
		"BRIDGE_LISTEN",
		"BRIDGE_LOG_FORMAT",
		"BRIDGE_MAX_REMOVAL_SHARE",
		"BRIDGE_OIDC_CLIENT_SECRET",
		"BRIDGE_OIDC_ISSUER",
		"BRIDGE_ON_LEAVE",
		"BRIDGE_RESYNC_INTERVAL",
		"BRIDGE_S3_ACCESS_KEY",
		"BRIDGE_S3_BUCKET",
		"BRIDGE_S3_ENDPOINT",
		"BRIDGE_S3_PUBLIC_URL",
		"BRIDGE_S3_SECRET_KEY",
		"BRIDGE_S3_USE_SSL",
		"BRIDGE_SYNC_DEADLINE",
		"BRIDGE_WEBHOOK_SECRET",
	}
	if len(got) != 25 {
		t.Errorf("got %d problems, want 25:\n%v", len(got), err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem variables (-want +got):\n%s\nerror: %v", diff, err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"maybe"`) || !strings.Contains(msg, "true or false") {
		t.Errorf("parse problem should quote the value and say what is wanted; got:\n%s", msg)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad_SecretFiles(t *testing.T) {
	secrets := []struct {
		name string
		get  func(c *Config) Secret
	}{
		{"BRIDGE_DISCORD_TOKEN", func(c *Config) Secret { return c.Discord.Token }},
		{"BRIDGE_AUTHENTIK_TOKEN", func(c *Config) Secret { return c.Authentik.Token }},
		{"BRIDGE_WEBHOOK_SECRET", func(c *Config) Secret { return c.Webhook.Secret }},
		{"BRIDGE_S3_ACCESS_KEY", func(c *Config) Secret { return c.S3.AccessKey }},
		{"BRIDGE_S3_SECRET_KEY", func(c *Config) Secret { return c.S3.SecretKey }},
		{"BRIDGE_OIDC_CLIENT_SECRET", func(c *Config) Secret { return c.OIDC.ClientSecret }},
	}
	// A base in which every secret is set directly, so each case can move one into a file.
	base := with(minimalEnv(), map[string]string{
		"BRIDGE_AVATAR_STORE": "s3", "BRIDGE_S3_ENDPOINT": "s3.example.com",
		"BRIDGE_S3_BUCKET": "avatars", "BRIDGE_S3_PUBLIC_URL": "https://cdn.example.com",
		"BRIDGE_S3_ACCESS_KEY": s3Access, "BRIDGE_S3_SECRET_KEY": s3Secret,
		"BRIDGE_OIDC_ISSUER": "https://auth.example.com/app/", "BRIDGE_OIDC_CLIENT_ID": "bridge",
		"BRIDGE_OIDC_CLIENT_SECRET": oidcSecret, "BRIDGE_ADMIN_GROUPS": "admins",
	})
	const fromFile = "from-file-secret-value-0123456789"

	for _, s := range secrets {
		t.Run(s.name, func(t *testing.T) {
			tests := []struct {
				name     string
				content  string
				keepBoth bool
				path     string
				want     string
				problem  []string
			}{
				{name: "trailing newline", content: fromFile + "\n", want: fromFile},
				{name: "trailing CRLF", content: fromFile + "\r\n", want: fromFile},
				{name: "no newline", content: fromFile, want: fromFile},
				{name: "both set", content: fromFile, keepBoth: true, problem: []string{s.name + "_FILE"}},
				{name: "empty file", content: "\n", problem: []string{s.name + "_FILE"}},
				{name: "missing file", path: filepath.Join(t.TempDir(), "nope"),
					problem: []string{s.name + "_FILE"}},
				{name: "directory", path: t.TempDir(), problem: []string{s.name + "_FILE"}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					path := tt.path
					if path == "" {
						path = writeFile(t, tt.content)
					}
					env := with(base, map[string]string{s.name + "_FILE": path})
					if !tt.keepBoth {
						delete(env, s.name)
					}

					cfg, err := Load(lookupIn(env))

					if diff := cmp.Diff(tt.problem, problemVars(t, err)); diff != "" {
						t.Fatalf("problems (-want +got):\n%s\nerror: %v", diff, err)
					}
					if err != nil {
						if strings.Contains(err.Error(), fromFile) {
							t.Errorf("error %q contains the file's content", err)
						}
						return
					}
					if got := s.get(cfg).Reveal(); got != tt.want {
						t.Errorf("secret = %q, want %q", got, tt.want)
					}
				})
			}
		})
	}
}

func TestLoad_PublicURL(t *testing.T) {
	tests := []struct {
		listen, public, want string
	}{
		{":8080", "", "http://localhost:8080"},
		{"127.0.0.1:9000", "", "http://localhost:9000"},
		{"[::1]:7000", "", "http://localhost:7000"},
		{":8080", "https://bridge.example.com/", "https://bridge.example.com"},
		{":0", "http://127.0.0.1:5555", "http://127.0.0.1:5555"},
	}
	for _, tt := range tests {
		t.Run(tt.listen+" "+tt.public, func(t *testing.T) {
			env := with(minimalEnv(), map[string]string{
				"BRIDGE_LISTEN": tt.listen, "BRIDGE_PUBLIC_URL": tt.public,
			})
			cfg, err := Load(lookupIn(env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.PublicURL != tt.want {
				t.Errorf("PublicURL = %q, want %q", cfg.PublicURL, tt.want)
			}
		})
	}
}

func TestConfig_ListenIsLoopback(t *testing.T) {
	tests := []struct {
		listen string
		want   bool
	}{
		{"127.0.0.1:8080", true},
		{"127.1.2.3:8080", true},
		{"[::1]:8080", true},
		{"localhost:8080", true},
		{"LOCALHOST:8080", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"192.168.1.10:8080", false},
		{"bridge.internal:8080", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			c := &Config{Listen: tt.listen}
			if got := c.ListenIsLoopback(); got != tt.want {
				t.Errorf("ListenIsLoopback(%q) = %v, want %v", tt.listen, got, tt.want)
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	cfg, err := Load(lookupIn(minimalEnv()))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate of a loaded config: %v", err)
	}

	cfg.Avatar.Size = 2000
	cfg.Webhook.Secret = NewSecret("short")
	cfg.AppRoles = []AppRole{{Name: "admin"}}
	got := problemVars(t, cfg.Validate())
	want := []string{"BRIDGE_APP_ROLES", "BRIDGE_AVATAR_SIZE", "BRIDGE_WEBHOOK_SECRET"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate problems (-want +got):\n%s", diff)
	}
}

// envNames returns the variables the Config's env tags name, from the library's own view.
func envNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, n := range loadSchema().names {
		if !strings.HasSuffix(n, "_FILE") {
			names = append(names, n)
		}
	}
	return names
}

func TestSchema(t *testing.T) {
	s := loadSchema()
	names := envNames(t)
	if len(names) != 42 {
		t.Errorf("got %d variables, want 42 (ARCHITECTURE §5 plus 10 added): %v", len(names), names)
	}
	for _, p := range (&document{}).secretPairs() {
		if !slices.Contains(s.names, p.name+"_FILE") {
			t.Errorf("secret %s has no %s_FILE variable", p.name, p.name)
		}
	}

	// Parse errors name a struct field by name and type; every field whose type can fail to
	// parse must map back to exactly one variable.
	for id, name := range s.fields {
		typ := id[strings.Index(id, "|")+1:]
		if name == "" && typ != "string" && typ != "config.Secret" {
			t.Errorf("field %s is ambiguous: its parse errors could not name their variable", id)
		}
	}
}

func TestConfig_Write(t *testing.T) {
	env := with(minimalEnv(), map[string]string{
		"BRIDGE_ADMIN_GROUPS":       "admins,bridge operators",
		"BRIDGE_OIDC_ISSUER":        "https://auth.example.com/app/",
		"BRIDGE_OIDC_CLIENT_ID":     "bridge",
		"BRIDGE_OIDC_CLIENT_SECRET": oidcSecret,
		"BRIDGE_APP_ROLES":          "admin=a,b;editor=c",
	})
	cfg, err := Load(lookupIn(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var buf bytes.Buffer
	cfg.Write(&buf)
	out := buf.String()

	for _, s := range secretValues {
		if strings.Contains(out, s) {
			t.Errorf("Write output contains secret %q:\n%s", s, out)
		}
	}

	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	values := map[string]string{}
	var order []string
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("line %q is not KEY=value", l)
		}
		if _, dup := values[k]; dup {
			t.Errorf("variable %s written twice", k)
		}
		values[k] = v
		order = append(order, k)
	}

	want := []string{
		"BRIDGE_DISCORD_TOKEN", "BRIDGE_DISCORD_GUILD_ID", "BRIDGE_DISCORD_API_URL",
		"BRIDGE_DISCORD_CDN_URL", "BRIDGE_AUTHENTIK_URL", "BRIDGE_AUTHENTIK_TOKEN",
		"BRIDGE_AUTHENTIK_SOURCE_SLUG", "BRIDGE_WEBHOOK_SECRET", "BRIDGE_LISTEN", "BRIDGE_PUBLIC_URL",
		"BRIDGE_DATA_DIR", "BRIDGE_AVATAR_STORE", "BRIDGE_S3_ENDPOINT", "BRIDGE_S3_BUCKET",
		"BRIDGE_S3_REGION", "BRIDGE_S3_ACCESS_KEY", "BRIDGE_S3_SECRET_KEY", "BRIDGE_S3_PUBLIC_URL",
		"BRIDGE_S3_USE_SSL", "BRIDGE_OIDC_ISSUER", "BRIDGE_OIDC_CLIENT_ID",
		"BRIDGE_OIDC_CLIENT_SECRET", "BRIDGE_ADMIN_GROUPS", "BRIDGE_RESYNC_INTERVAL",
		"BRIDGE_ON_LEAVE", "BRIDGE_LEAVE_GRACE", "BRIDGE_REVOKE_ON_LOSS", "BRIDGE_MAX_REMOVAL_SHARE",
		"BRIDGE_ALLOW_SUPERUSER_GROUPS", "BRIDGE_AVATAR_SIZE", "BRIDGE_AVATAR_PREFER_GUILD",
		"BRIDGE_APP_ROLES",
		"BRIDGE_GATE_ALLOW_PENDING", "BRIDGE_SYNC_DEADLINE", "BRIDGE_SET_NAME",
		"BRIDGE_MAPPING_REFRESH", "BRIDGE_S3_PREFIX", "BRIDGE_AVATAR_GC_AFTER", "BRIDGE_LOG_LEVEL",
		"BRIDGE_LOG_FORMAT", "BRIDGE_GATEWAY", "BRIDGE_DEV_NO_LOGIN",
	}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("Write order (-want +got):\n%s", diff)
	}
	tagged := envNames(t)
	sort.Strings(tagged)
	written := slices.Sorted(slices.Values(order))
	if diff := cmp.Diff(tagged, written); diff != "" {
		t.Errorf("Write does not cover exactly the tagged variables (-tagged +written):\n%s", diff)
	}

	checks := map[string]string{
		"BRIDGE_DISCORD_TOKEN":      "[redacted]",
		"BRIDGE_OIDC_CLIENT_SECRET": "[redacted]",
		"BRIDGE_S3_SECRET_KEY":      "",
		"BRIDGE_DISCORD_GUILD_ID":   "1187654321098765431",
		"BRIDGE_AUTHENTIK_URL":      "https://auth.example.com",
		"BRIDGE_ADMIN_GROUPS":       `"admins,bridge operators"`,
		"BRIDGE_RESYNC_INTERVAL":    "1h0m0s",
		"BRIDGE_MAX_REMOVAL_SHARE":  "0.2",
		"BRIDGE_S3_USE_SSL":         "true",
		"BRIDGE_APP_ROLES":          "admin=a,b;editor=c",
		"BRIDGE_PUBLIC_URL":         "http://localhost:8080",
	}
	for k, want := range checks {
		if got := values[k]; got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
}
