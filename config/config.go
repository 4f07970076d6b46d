// Package config turns the bridge's environment variables into one typed Config and checks it,
// so the rest of the bridge never reads the environment itself. Every problem is reported at
// once, naming its variable, and secrets never appear in any printed form.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/caarlos0/env/v11"
)

// Values of the settings that take one of a fixed set of words.
const (
	AvatarStoreLocal = "local"
	AvatarStoreS3    = "s3"

	OnLeaveRemoveGroups = "remove_groups"
	OnLeaveDeactivate   = "deactivate"
	OnLeaveKeep         = "keep"

	LogFormatText = "text"
	LogFormatJSON = "json"
)

// Config is the whole configuration of the bridge. Load fills it from the environment; each
// field's env tag names its variable (see ARCHITECTURE.md §5).
type Config struct {
	Discord   Discord
	Authentik Authentik
	Webhook   Webhook

	// Listen is the address the HTTP server binds, host:port.
	Listen string `env:"BRIDGE_LISTEN" envDefault:":8080"`
	// PublicURL is where people and Authentik reach the bridge, without a trailing slash. When
	// BRIDGE_PUBLIC_URL is empty, Load derives http://localhost:<port of Listen>, which is right
	// only when everything runs on one machine; set it behind a proxy or in containers.
	PublicURL string `env:"BRIDGE_PUBLIC_URL"`
	// DataDir holds the SQLite database and the local avatar store.
	DataDir string `env:"BRIDGE_DATA_DIR" envDefault:"./data"`

	Avatar Avatar
	S3     S3
	OIDC   OIDC
	Sync   Sync

	// AppRoles is an optional preview of how downstream apps turn groups into roles,
	// from BRIDGE_APP_ROLES written as "role=group,group;role2=group".
	AppRoles []AppRole `env:"BRIDGE_APP_ROLES"`

	Log Log

	// Gateway keeps a Discord gateway session for live updates. Off, the bridge works from the
	// hooks and full passes alone (BRIDGE_RESYNC_INTERVAL then decides how stale it may get).
	Gateway bool `env:"BRIDGE_GATEWAY" envDefault:"true"`

	// DevNoLogin opens the status page without a login. Validate allows it only when Listen is
	// a loopback address, so it can never expose the page on a network.
	DevNoLogin bool `env:"BRIDGE_DEV_NO_LOGIN" envDefault:"false"`
}

// Discord configures the bot that reads the guild.
type Discord struct {
	Token   Secret `env:"BRIDGE_DISCORD_TOKEN"`
	GuildID string `env:"BRIDGE_DISCORD_GUILD_ID"`
	// APIURL and CDNURL change only for tests; stored without a trailing slash.
	APIURL string `env:"BRIDGE_DISCORD_API_URL" envDefault:"https://discord.com/api/v10"`
	CDNURL string `env:"BRIDGE_DISCORD_CDN_URL" envDefault:"https://cdn.discordapp.com"`
}

// Authentik configures the API client.
type Authentik struct {
	// URL is the base URL of Authentik, stored without a trailing slash.
	URL   string `env:"BRIDGE_AUTHENTIK_URL"`
	Token Secret `env:"BRIDGE_AUTHENTIK_TOKEN"`
	// SourceSlug is the slug of the Discord OAuth source whose connections link users.
	SourceSlug string `env:"BRIDGE_AUTHENTIK_SOURCE_SLUG" envDefault:"discord"`
}

// Webhook configures the hooks Authentik calls.
type Webhook struct {
	// Secret is the bearer token Authentik sends; Validate wants at least 16 characters.
	Secret Secret `env:"BRIDGE_WEBHOOK_SECRET"`
	// SyncDeadline bounds how long the sync hook works before it answers and finishes in the
	// background.
	SyncDeadline time.Duration `env:"BRIDGE_SYNC_DEADLINE" envDefault:"5s"`
}

// Avatar configures avatar hosting.
type Avatar struct {
	Store       string        `env:"BRIDGE_AVATAR_STORE" envDefault:"local"`
	Size        int           `env:"BRIDGE_AVATAR_SIZE" envDefault:"64"`
	PreferGuild bool          `env:"BRIDGE_AVATAR_PREFER_GUILD" envDefault:"false"`
	GCAfter     time.Duration `env:"BRIDGE_AVATAR_GC_AFTER" envDefault:"168h"`
}

// S3 configures the S3 avatar store; its fields are required only when Avatar.Store is "s3".
type S3 struct {
	// Endpoint is host[:port] without a scheme; UseSSL picks https.
	Endpoint string `env:"BRIDGE_S3_ENDPOINT"`
	Bucket   string `env:"BRIDGE_S3_BUCKET"`
	Region   string `env:"BRIDGE_S3_REGION" envDefault:"us-east-1"`
	// Prefix is prepended to object keys; stored without leading or trailing slashes.
	Prefix string `env:"BRIDGE_S3_PREFIX"`
	// PublicURL is the base of the avatar links written into Authentik, without a trailing slash.
	PublicURL string `env:"BRIDGE_S3_PUBLIC_URL"`
	AccessKey Secret `env:"BRIDGE_S3_ACCESS_KEY"`
	SecretKey Secret `env:"BRIDGE_S3_SECRET_KEY"`
	UseSSL    bool   `env:"BRIDGE_S3_USE_SSL" envDefault:"true"`
}

// OIDC configures the login to the status page. Either all of Issuer, ClientID, ClientSecret
// and AdminGroups are set, or none.
type OIDC struct {
	Issuer       string `env:"BRIDGE_OIDC_ISSUER"`
	ClientID     string `env:"BRIDGE_OIDC_CLIENT_ID"`
	ClientSecret Secret `env:"BRIDGE_OIDC_CLIENT_SECRET"`
	// AdminGroups are the names, as in the `groups` claim, of the groups that may see the page.
	AdminGroups []string `env:"BRIDGE_ADMIN_GROUPS"`
}

// Sync configures reconciliation.
type Sync struct {
	// ResyncInterval is the time between full passes; 0 turns off the passes at start, on a
	// timer and after a new gateway session, leaving the hooks, gateway events and passes an
	// admin asks for.
	ResyncInterval time.Duration `env:"BRIDGE_RESYNC_INTERVAL" envDefault:"1h"`
	// OnLeave is one of OnLeaveRemoveGroups, OnLeaveDeactivate or OnLeaveKeep.
	OnLeave    string        `env:"BRIDGE_ON_LEAVE" envDefault:"remove_groups"`
	LeaveGrace time.Duration `env:"BRIDGE_LEAVE_GRACE" envDefault:"0s"`
	// RevokeOnLoss revokes sessions and tokens when a managed group is removed.
	RevokeOnLoss bool `env:"BRIDGE_REVOKE_ON_LOSS" envDefault:"false"`
	// MaxRemovalShare is the share of linked users, in (0, 1], a full pass may strip of managed
	// groups before it stops and reports.
	MaxRemovalShare      float64 `env:"BRIDGE_MAX_REMOVAL_SHARE" envDefault:"0.2"`
	AllowSuperuserGroups bool    `env:"BRIDGE_ALLOW_SUPERUSER_GROUPS" envDefault:"false"`
	// GateAllowPending lets members who have not passed membership screening through the gate.
	GateAllowPending bool `env:"BRIDGE_GATE_ALLOW_PENDING" envDefault:"false"`
	// SetName sets the Authentik user's name from the Discord display name.
	SetName bool `env:"BRIDGE_SET_NAME" envDefault:"false"`
	// MappingRefresh is how long the group mapping read from Authentik is cached.
	MappingRefresh time.Duration `env:"BRIDGE_MAPPING_REFRESH" envDefault:"30s"`
}

// AppRole is one downstream role and the Authentik groups that grant it.
type AppRole struct {
	Name   string
	Groups []string
}

// Log configures the process logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `env:"BRIDGE_LOG_LEVEL" envDefault:"info"`
	// Format is LogFormatText or LogFormatJSON.
	Format string `env:"BRIDGE_LOG_FORMAT" envDefault:"text"`
}

// VarError is one configuration problem. Its text starts with the variable's name and never
// contains a secret value.
type VarError struct {
	Var string
	Err error
}

func (e *VarError) Error() string { return e.Var + ": " + e.Err.Error() }

func (e *VarError) Unwrap() error { return e.Err }

func varErrorf(name, format string, args ...any) *VarError {
	return &VarError{Var: name, Err: fmt.Errorf(format, args...)}
}

// secretFiles receives the NAME_FILE variants of the secrets. The library's "file" option reads
// the file; Load then checks that only one of NAME and NAME_FILE was given.
type secretFiles struct {
	DiscordToken     Secret `env:"BRIDGE_DISCORD_TOKEN_FILE,file"`
	AuthentikToken   Secret `env:"BRIDGE_AUTHENTIK_TOKEN_FILE,file"`
	WebhookSecret    Secret `env:"BRIDGE_WEBHOOK_SECRET_FILE,file"`
	S3AccessKey      Secret `env:"BRIDGE_S3_ACCESS_KEY_FILE,file"`
	S3SecretKey      Secret `env:"BRIDGE_S3_SECRET_KEY_FILE,file"`
	OIDCClientSecret Secret `env:"BRIDGE_OIDC_CLIENT_SECRET_FILE,file"`
}

// document is what one env.Parse call fills: the config and the secret files beside it.
type document struct {
	Config Config
	Files  secretFiles
}

type secretPair struct {
	name string
	dst  *Secret
	file Secret
}

func (d *document) secretPairs() []secretPair {
	c, f := &d.Config, &d.Files
	return []secretPair{
		{"BRIDGE_DISCORD_TOKEN", &c.Discord.Token, f.DiscordToken},
		{"BRIDGE_AUTHENTIK_TOKEN", &c.Authentik.Token, f.AuthentikToken},
		{"BRIDGE_WEBHOOK_SECRET", &c.Webhook.Secret, f.WebhookSecret},
		{"BRIDGE_S3_ACCESS_KEY", &c.S3.AccessKey, f.S3AccessKey},
		{"BRIDGE_S3_SECRET_KEY", &c.S3.SecretKey, f.S3SecretKey},
		{"BRIDGE_OIDC_CLIENT_SECRET", &c.OIDC.ClientSecret, f.OIDCClientSecret},
	}
}

func parserOptions(environ map[string]string) env.Options {
	return env.Options{
		Environment: environ,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeFor[Secret]():    func(v string) (any, error) { return NewSecret(v), nil },
			reflect.TypeFor[[]AppRole](): func(v string) (any, error) { return parseAppRoles(v) },
		},
	}
}

// schema lists every variable Load reads, and maps the struct fields the library names in its
// parse errors back to their variables. The library names a field only by its name and type, so
// two fields sharing both (Discord.Token and Authentik.Token) map to "": harmless for strings
// and secrets, which never fail to parse; TestSchema keeps every other type unambiguous.
type schema struct {
	names  []string
	fields map[string]string // field name and type → variable, "" when ambiguous
}

var loadSchema = sync.OnceValue(func() schema {
	s := schema{fields: map[string]string{}}
	params, err := env.GetFieldParamsWithOptions(&document{}, parserOptions(map[string]string{}))
	if err != nil {
		// The struct tags are fixed at compile time; TestSchema fails if they stop parsing.
		return s
	}
	for _, p := range params {
		s.names = append(s.names, p.Key)
	}
	collectFields(reflect.TypeFor[document](), s.fields)
	return s
})

func fieldID(name string, t reflect.Type) string { return name + "|" + t.String() }

func collectFields(t reflect.Type, out map[string]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			id := fieldID(f.Name, f.Type)
			if _, dup := out[id]; dup {
				name = ""
			}
			out[id] = name
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, out)
		}
	}
}

// FromEnv loads the configuration from the process environment.
func FromEnv() (*Config, error) { return Load(os.LookupEnv) }

// Load reads every variable through lookup, applies defaults and NAME_FILE secrets, derives
// PublicURL when it is empty, and validates the result. The error joins every problem found,
// parse and validation alike, each a *VarError naming its variable; the Config is nil then.
func Load(lookup func(string) (string, bool)) (*Config, error) {
	s := loadSchema()
	environ := make(map[string]string, len(s.names))
	for _, name := range s.names {
		if v, ok := lookup(name); ok {
			environ[name] = v
		}
	}

	var doc document
	failed := map[string]bool{}
	problems := translate(env.ParseWithOptions(&doc, parserOptions(environ)), environ, s, failed)
	problems = append(problems, doc.applySecretFiles(environ, failed)...)

	c := &doc.Config
	c.normalize()
	if c.PublicURL == "" {
		if err := c.derivePublicURL(); err != nil {
			problems = append(problems, err)
		}
		if c.PublicURL == "" {
			// Nothing to derive from; the listen problem is the one worth reporting.
			failed["BRIDGE_PUBLIC_URL"] = true
		}
	}
	problems = append(problems, c.validate(failed)...)

	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}

// translate turns the library's errors into VarErrors and records which variables failed, so
// validation does not report them a second time.
func translate(err error, environ map[string]string, s schema, failed map[string]bool) []error {
	if err == nil {
		return nil
	}
	var agg env.AggregateError
	inner := []error{err}
	if errors.As(err, &agg) {
		inner = agg.Errors
	}

	var out []error
	for _, e := range inner {
		var pe env.ParseError
		var fe env.LoadFileContentError
		switch {
		case errors.As(e, &fe):
			failed[fe.Key] = true
			err := fmt.Errorf("read secret file: %w", fe.Err)
			out = append(out, &VarError{Var: fe.Key, Err: err})
		case errors.As(e, &pe):
			name := s.fields[fieldID(pe.Name, pe.Type)]
			if name == "" {
				out = append(out, fmt.Errorf("config field %s: %w", pe.Name, pe.Err))
				continue
			}
			failed[name] = true
			out = append(out, parseProblems(name, environ[name], pe)...)
		default:
			out = append(out, fmt.Errorf("parse environment: %w", e))
		}
	}
	return out
}

func parseProblems(name, raw string, pe env.ParseError) []error {
	var want string
	switch pe.Type {
	case reflect.TypeFor[bool]():
		want = "want true or false"
	case reflect.TypeFor[time.Duration]():
		want = "want a duration such as 30s, 5m or 1h"
	case reflect.TypeFor[int]():
		want = "want a whole number"
	case reflect.TypeFor[float64]():
		want = "want a number such as 0.2"
	default:
		// Our own parsers (APP_ROLES) already write messages that name no secret.
		if multi, ok := pe.Err.(interface{ Unwrap() []error }); ok {
			var out []error
			for _, e := range multi.Unwrap() {
				out = append(out, &VarError{Var: name, Err: e})
			}
			return out
		}
		return []error{&VarError{Var: name, Err: pe.Err}}
	}
	return []error{varErrorf(name, "invalid value %q: %s", raw, want)}
}

// applySecretFiles moves the content of each NAME_FILE into its secret, trimming the trailing
// newline editors and `echo` leave, and refuses NAME and NAME_FILE given together.
func (d *document) applySecretFiles(environ map[string]string, failed map[string]bool) []error {
	var out []error
	for _, p := range d.secretPairs() {
		fileVar := p.name + "_FILE"
		direct, viaFile := environ[p.name] != "", environ[fileVar] != ""
		switch {
		case direct && viaFile:
			out = append(out, varErrorf(fileVar,
				"both %s and %s are set; set only one", p.name, fileVar))
			failed[p.name] = true
		case viaFile && failed[fileVar]:
			failed[p.name] = true
		case viaFile:
			v := strings.TrimRight(p.file.Reveal(), "\r\n")
			if v == "" {
				out = append(out, varErrorf(fileVar, "file %s is empty", environ[fileVar]))
				failed[p.name] = true
				continue
			}
			*p.dst = NewSecret(v)
		}
	}
	return out
}

// normalize trims what would otherwise make joined URLs and keys wrong: trailing slashes on base
// URLs, slashes around the S3 prefix, spaces around admin group names. The OIDC issuer is left
// as given because it must match the provider's issuer exactly.
func (c *Config) normalize() {
	for _, u := range []*string{
		&c.Discord.APIURL, &c.Discord.CDNURL, &c.Authentik.URL, &c.PublicURL, &c.S3.PublicURL,
	} {
		*u = strings.TrimRight(*u, "/")
	}
	c.S3.Prefix = strings.Trim(c.S3.Prefix, "/")
	for i, g := range c.OIDC.AdminGroups {
		c.OIDC.AdminGroups[i] = strings.TrimSpace(g)
	}
}

func (c *Config) derivePublicURL() error {
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		// validate reports the broken listen address; nothing to derive from.
		return nil
	}
	if port == "0" {
		return varErrorf("BRIDGE_PUBLIC_URL", "required when BRIDGE_LISTEN uses port 0")
	}
	c.PublicURL = "http://localhost:" + port
	return nil
}

// ListenIsLoopback reports whether Listen binds only a loopback address (127.0.0.0/8, ::1 or
// localhost). An empty host binds every interface and is not loopback.
func (c *Config) ListenIsLoopback() bool {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
