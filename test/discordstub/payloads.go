package discordstub

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
)

// examples are payloads exactly as Discord's developer documentation prints them.
//
//go:embed testdata/*.example.json
var examples embed.FS

// User is a user object as Discord embeds it in a member fetched with a bot token: no email,
// no verified flag. Nil pointers are sent as null, as Discord does.
type User struct {
	ID                   string          `json:"id"`
	Username             string          `json:"username"`
	Discriminator        string          `json:"discriminator"`
	GlobalName           *string         `json:"global_name"`
	Avatar               *string         `json:"avatar"`
	Bot                  bool            `json:"bot,omitempty"`
	Banner               *string         `json:"banner"`
	AccentColor          *int            `json:"accent_color"`
	PublicFlags          int             `json:"public_flags"`
	Flags                int             `json:"flags"`
	AvatarDecorationData json.RawMessage `json:"avatar_decoration_data"`
	PrimaryGuild         json.RawMessage `json:"primary_guild"`
}

// Member is a guild member in the shape of GET /guilds/{guild}/members/{user}. Like Discord's,
// it has no guild_id.
type Member struct {
	User                       User     `json:"user"`
	Nick                       *string  `json:"nick"`
	Avatar                     *string  `json:"avatar"`
	Banner                     *string  `json:"banner"`
	Roles                      []string `json:"roles"`
	JoinedAt                   string   `json:"joined_at"`
	PremiumSince               *string  `json:"premium_since"`
	Deaf                       bool     `json:"deaf"`
	Mute                       bool     `json:"mute"`
	Flags                      int      `json:"flags"`
	Pending                    bool     `json:"pending"`
	CommunicationDisabledUntil *string  `json:"communication_disabled_until"`
}

// RoleColors is a role's colours; the primary one equals Role.Color.
type RoleColors struct {
	PrimaryColor   int  `json:"primary_color"`
	SecondaryColor *int `json:"secondary_color"`
	TertiaryColor  *int `json:"tertiary_color"`
}

// Role is a role object of GET /guilds/{guild}/roles.
type Role struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Color        int             `json:"color"`
	Colors       RoleColors      `json:"colors"`
	Hoist        bool            `json:"hoist"`
	Icon         *string         `json:"icon"`
	UnicodeEmoji *string         `json:"unicode_emoji"`
	Position     int             `json:"position"`
	Permissions  string          `json:"permissions"`
	Managed      bool            `json:"managed"`
	Mentionable  bool            `json:"mentionable"`
	Flags        int             `json:"flags"`
	Tags         json.RawMessage `json:"tags,omitempty"`
}

// The embedded examples, decoded once. New refuses to start if any of them failed, so a broken
// file shows up as an error instead of as quietly empty payloads.
var (
	rateLimitUser   map[string]any
	rateLimitGlobal map[string]any
	errExamples     error
)

func init() {
	errExamples = errors.Join(
		decodeExample("guild_member.example.json", &Member{}),
		decodeExample("user_migrated.example.json", &User{}),
		decodeExample("role.example.json", &Role{}),
		decodeExample("rate_limit_429_user.example.json", &rateLimitUser),
		decodeExample("rate_limit_429_global.example.json", &rateLimitGlobal),
	)
}

// ExampleMember is Discord's documented guild member with Discord's documented migrated user
// (ID 80351110224678912, "nelly", global name "Nelly") in its empty user object. Change the
// fields a test cares about.
func ExampleMember() Member {
	// Decoded afresh so that callers never share the pointers of the nullable fields; init
	// has already reported a broken file through New.
	var m Member
	_ = decodeExample("guild_member.example.json", &m)
	_ = decodeExample("user_migrated.example.json", &m.User)
	if m.Roles == nil {
		m.Roles = []string{}
	}
	return m
}

// ExampleRole is Discord's documented role object (ID 41771983423143936, position 1).
func ExampleRole() Role {
	var r Role
	_ = decodeExample("role.example.json", &r)
	return r
}

// Ptr returns a pointer to v, for the nullable fields of the payload types.
func Ptr[T any](v T) *T { return &v }

func decodeExample(name string, v any) error {
	b, err := examples.ReadFile("testdata/" + name)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return fmt.Errorf("embedded example %s: %w", name, err)
	}
	return nil
}

// rateLimitBody is the documented 429 body for the scope, with retry_after replaced.
func rateLimitBody(global bool, retryAfter float64) []byte {
	src := rateLimitUser
	if global {
		src = rateLimitGlobal
	}
	body := make(map[string]any, len(src))
	for k, v := range src {
		body[k] = v
	}
	body["retry_after"] = retryAfter
	b, _ := json.Marshal(body) // strings, floats and bools always marshal
	return b
}
