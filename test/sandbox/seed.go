package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// The seeded world: a makerspace's Discord guild and the Authentik that its members log in
// with, left in the state an admin would find after years of the old login-time mapping:
// mostly right, some memberships missing or left over, and a few broken group attributes.

// avatarFiles are real images, copied from avatars/testdata, in every format the CDN serves.
//
//go:embed testdata/avatars
var avatarFiles embed.FS

const (
	guildName = "Riverside Makerspace"
	// adminGroup may see the status page. It has no discord_role_id, so the bridge leaves it
	// alone and the admin keeps access whatever the trickle does.
	adminGroup = "bridge-admins"
	sourceSlug = "discord"
	oidcSlug   = "discord-bridge"
	appRoles   = "admin=makerspace-admins,inventory-admins;editor=makerspace-editors"
	// brokenAvatar is a PNG cut off in the middle: the bridge must report it and go on.
	brokenAvatar = "video-001.cut-at-15000.png"
)

// discordTime is how Discord writes timestamps.
const discordTime = "2006-01-02T15:04:05.000000+00:00"

// discordEpoch is the first millisecond of 2015, where snowflake timestamps start.
const discordEpoch = 1420070400000

// snowflakeAt makes a Discord ID as Discord does: milliseconds since its epoch, shifted past
// the worker, process and sequence bits, which n fills.
func snowflakeAt(t time.Time, n int) string {
	return strconv.FormatUint(uint64(t.UnixMilli()-discordEpoch)<<22|uint64(n&0x3fffff), 10)
}

func day(year int, month time.Month, d int) time.Time {
	return time.Date(year, month, d, 18, 4, 31, 0, time.UTC)
}

var guildID = snowflakeAt(day(2019, time.September, 14), 1)

// roleSeed is a Discord role; key is how the tables below refer to it.
type roleSeed struct {
	key, name string
	color     int
	hoist     bool
	managed   bool // given by an integration (the booster role); nobody can assign it
}

// roles are listed from the top of the guild's role list down.
var roles = []roleSeed{
	{key: "board", name: "Board", color: 0xE74C3C, hoist: true},
	{key: "mods", name: "Moderators", color: 0x1F8B4C, hoist: true},
	{key: "inventory", name: "Inventory Team", color: 0xE67E22},
	{key: "editors", name: "Editors", color: 0x3498DB},
	{key: "keyholder", name: "Keyholder", color: 0x206694},
	{key: "laser", name: "Laser Certified", color: 0x9B59B6},
	{key: "printing", name: "3D Printing", color: 0x1ABC9C},
	{key: "electronics", name: "Electronics", color: 0xF1C40F},
	{key: "woodshop", name: "Woodshop", color: 0xA84300},
	{key: "members", name: "Members", color: 0x2ECC71, hoist: true},
	{key: "events", name: "Event Crew", color: 0xE91E63},
	{key: "booster", name: "Server Booster", color: 0xF47FFF, managed: true},
	{key: "newcomer", name: "Newcomer"},
}

// roleIDs are the roles' snowflakes by key; deletedRoleID is a role that no longer exists,
// which one group still names.
var (
	roleIDs       = makeRoleIDs()
	deletedRoleID = snowflakeAt(day(2020, time.June, 2), 77)
)

// makeRoleIDs dates the roles an hour apart on the day the guild was made.
func makeRoleIDs() map[string]string {
	ids := map[string]string{}
	for i, r := range roles {
		ids[r.key] = snowflakeAt(day(2019, time.September, 14).Add(time.Duration(i)*time.Hour),
			i+2)
	}
	return ids
}

// groupSeed is an Authentik group. mapping is the raw JSON of its discord_role_id attribute
// ("" for none); problem says why the bridge must refuse the mapping ("" when it is valid).
type groupSeed struct {
	name      string
	superuser bool
	mapping   string
	problem   string
}

func quoted(key string) string { return strconv.Quote(roleIDs[key]) }

var groups = []groupSeed{
	{name: "makerspace-admins", mapping: quoted("board")},
	// Typed without quotes in a YAML blueprint: a number, which the bridge must read exactly.
	{name: "inventory-admins", mapping: roleIDs["inventory"]},
	{name: "makerspace-editors", mapping: "[" + quoted("editors") + "," + quoted("mods") + "]"},
	{name: "makerspace-members", mapping: quoted("members")},
	{name: "laser-users", mapping: quoted("laser")},
	{name: "printing", mapping: quoted("printing")},
	{name: "electronics-lab", mapping: quoted("electronics")},
	{name: "woodshop", mapping: quoted("woodshop")},
	{
		name: "keyholders", mapping: `{"id":` + quoted("keyholder") + `}`,
		problem: "discord_role_id is an object",
	},
	{
		name: "authentik Admins", superuser: true, mapping: quoted("board"),
		problem: "superuser group",
	},
	{
		name: "former-staff", mapping: strconv.Quote(deletedRoleID),
		problem: "names a role the guild does not have",
	},
	{name: adminGroup},
	{name: "newsletter"},
}

// groupsOf maps a role key to the groups whose valid mapping names it.
func groupsOf(roleKey string) []string {
	var out []string
	for _, g := range groups {
		if g.problem == "" && g.mapping != "" && strings.Contains(g.mapping, roleIDs[roleKey]) {
			out = append(out, g.name)
		}
	}
	return out
}

// personSeed is a guild member or a former one. avatar names a file of testdata/avatars, or
// is "" for Discord's default avatar.
type personSeed struct {
	global, username, nick string
	roles                  []string
	avatar                 string
	guildAvatar            string // a per-guild avatar over the user's own
	discriminator          string // "" means "0", the new username system
	created, joined        time.Time
	unlinked               bool // in the guild, but never logged in to Authentik
	departed               bool // linked in Authentik, but no longer in the guild
	pending                bool // has not passed membership screening
	bot                    bool
	// drift is how the old mapping left the Authentik user: "missing" lacks the groups of
	// the second role, "extra:<group>" holds a group no role gives.
	drift string
}

// Login is a username and password for the provider's login form.
type Login struct {
	Username string
	Password string
}

var (
	adminLogin  = Login{Username: "mara.okafor", Password: "sandbox-admin"}
	memberLogin = Login{Username: "jonas_l", Password: "sandbox-member"}
)

var people = []personSeed{
	{
		global: "Mara Okafor", username: "mara.okafor", nick: "Mara 🛠️",
		roles: []string{"board", "members", "laser"}, avatar: "tux.png",
		created: day(2017, time.March, 3), joined: day(2019, time.September, 14),
	},
	{
		global: "Jonas Lindqvist", username: "jonas_l", nick: "Jonas | Woodshop",
		roles: []string{"members", "woodshop"}, avatar: "video-001.jpeg",
		created: day(2018, time.January, 22), joined: day(2019, time.October, 2),
	},
	{
		global: "Priya Raman", username: "priya.builds",
		roles:  []string{"board", "members", "electronics", "inventory"},
		avatar: "go-turns-two-280x360.jpeg", drift: "missing",
		created: day(2016, time.July, 9), joined: day(2019, time.September, 20),
	},
	{
		global: "Tomás Herrera", username: "tomas.h",
		roles: []string{"members", "printing", "editors"}, avatar: "blue-purple-pink.lossy.webp",
		created: day(2020, time.May, 17), joined: day(2020, time.June, 1),
	},
	{
		global: "Yuki Tanaka", username: "yukitanaka", roles: []string{"members", "laser", "printing"},
		avatar:  "yellow_rose.lossy-with-alpha.webp",
		created: day(2019, time.February, 28), joined: day(2021, time.April, 11),
	},
	{
		global: "Lena Fischer", username: "lenafischer", roles: []string{"members", "inventory"},
		avatar: "triangle-001.gif", drift: "missing",
		created: day(2021, time.August, 3), joined: day(2021, time.August, 4),
	},
	{
		global: "Kwame Mensah", username: "kwame_m", nick: "kwame (mod)",
		roles: []string{"mods", "members", "electronics"}, avatar: "video-005.gray.png",
		created: day(2018, time.November, 12), joined: day(2020, time.January, 19),
	},
	{
		global: "Sofia Rossi", username: "sofia.rossi", roles: []string{"members", "editors"},
		avatar:  "video-001.cmyk.jpeg",
		created: day(2022, time.February, 14), joined: day(2022, time.March, 1),
	},
	{
		global: "Mateusz Kowalski", username: "mkowalski",
		roles:   []string{"members", "woodshop", "keyholder"},
		created: day(2017, time.October, 30), joined: day(2019, time.December, 7),
	},
	{
		global: "Aisha Bello", username: "aisha.b", roles: []string{"members", "laser"},
		avatar:  brokenAvatar,
		created: day(2023, time.January, 5), joined: day(2023, time.January, 6),
	},
	{
		global: "Noah Schmidt", username: "noah_schmidt", roles: []string{"members"},
		avatar: "tux.png", drift: "extra:laser-users",
		created: day(2020, time.September, 9), joined: day(2022, time.May, 23),
	},
	{
		global: "Emma Dubois", username: "emmad", roles: []string{"members", "events"},
		avatar:  "video-001.jpeg",
		created: day(2019, time.July, 7), joined: day(2021, time.July, 8),
	},
	{
		global: "Liam O'Connor", username: "liam.oc", roles: []string{"members", "woodshop"},
		avatar: "blue-purple-pink.lossy.webp", drift: "missing",
		created: day(2016, time.December, 24), joined: day(2020, time.February, 2),
	},
	{
		global: "Chen Wei", username: "chenwei", roles: []string{"members", "electronics", "printing"},
		avatar: "tux.png", guildAvatar: "video-005.gray.png",
		created: day(2018, time.April, 1), joined: day(2020, time.October, 10),
	},
	{
		global: "Fatima Zahra", username: "fatima.z", roles: []string{"mods", "members"},
		avatar:  "yellow_rose.lossy-with-alpha.webp",
		created: day(2021, time.March, 18), joined: day(2021, time.March, 19),
	},
	{
		// An account from before the new usernames: no global name, a discriminator.
		username: "oskar.n", discriminator: "4821", roles: []string{"members", "keyholder"},
		created: day(2016, time.May, 2), joined: day(2019, time.November, 11),
	},
	{
		global: "Isabela Costa", username: "isacosta", roles: []string{"members", "printing"},
		avatar: "triangle-001.gif", drift: "missing",
		created: day(2022, time.June, 30), joined: day(2023, time.March, 3),
	},
	{
		global: "Dmitri Volkov", username: "dvolkov", roles: []string{"members", "electronics"},
		avatar:  "video-001.cmyk.jpeg",
		created: day(2017, time.August, 8), joined: day(2020, time.August, 8),
	},
	{
		global: "Hannah Weber", username: "hannahw",
		roles: []string{"members", "laser", "editors"}, avatar: "video-005.gray.png",
		created: day(2019, time.May, 5), joined: day(2021, time.September, 1),
	},
	{
		global: "Samir Haddad", username: "samir.h", roles: []string{"members"},
		avatar:  "go-turns-two-280x360.jpeg",
		created: day(2020, time.November, 11), joined: day(2024, time.January, 15),
	},
	{
		global: "Nina Petrović", username: "nina.p", roles: []string{"members", "events"},
		avatar:  "tux.png",
		created: day(2021, time.December, 1), joined: day(2022, time.January, 9),
	},
	{
		global: "Lukas Bauer", username: "lukasbauer", roles: []string{"members", "booster"},
		avatar:  "video-001.jpeg",
		created: day(2018, time.June, 6), joined: day(2021, time.June, 6),
	},
	{
		global: "Ama Owusu", username: "ama.owusu",
		roles: []string{"members", "laser", "woodshop"}, avatar: "blue-purple-pink.lossy.webp",
		created: day(2022, time.September, 19), joined: day(2022, time.October, 1),
	},
	{
		global: "Rafael Mendes", username: "rafa.mendes", roles: []string{"members", "printing"},
		created: day(2019, time.January, 1), joined: day(2023, time.July, 4),
	},
	{
		global: "Ingrid Johansen", username: "ingridj", roles: []string{"members", "inventory"},
		avatar:  "yellow_rose.lossy-with-alpha.webp",
		created: day(2017, time.February, 2), joined: day(2020, time.March, 3),
	},
	{
		global: "Kenji Watanabe", username: "kenji_w", roles: []string{"members", "electronics"},
		avatar: "video-005.gray.png", drift: "extra:woodshop",
		created: day(2020, time.April, 4), joined: day(2023, time.April, 4),
	},
	{
		global: "Zoe Martin", username: "zoemartin", roles: []string{"newcomer"},
		avatar: "tux.png", pending: true,
		created: day(2025, time.February, 20), joined: day(2025, time.March, 1),
	},
	{
		global: "Arjun Mehta", username: "arjun.m", roles: []string{"members", "laser"},
		avatar: "video-001.cmyk.jpeg", drift: "missing",
		created: day(2018, time.September, 15), joined: day(2022, time.December, 12),
	},
	{
		global: "Clara Hoffmann", username: "clarah",
		roles: []string{"members", "editors", "woodshop"}, avatar: "triangle-001.gif",
		created: day(2019, time.October, 31), joined: day(2021, time.November, 5),
	},
	{
		global: "Elif Yılmaz", username: "elif.y", roles: []string{"newcomer"},
		avatar: "video-001.jpeg", unlinked: true,
		created: day(2024, time.August, 8), joined: day(2025, time.April, 2),
	},
	{
		global: "Marek Novák", username: "marek_novak", roles: []string{"members"},
		avatar: "blue-purple-pink.lossy.webp", unlinked: true,
		created: day(2021, time.May, 21), joined: day(2024, time.May, 30),
	},
	{
		global: "Lucía Fernández", username: "lucia.f", roles: []string{"members", "printing"},
		avatar: "go-turns-two-280x360.jpeg", unlinked: true,
		created: day(2023, time.October, 10), joined: day(2024, time.November, 11),
	},
	{
		global: "Ben Carter", username: "bencarter", roles: []string{"members", "booster"},
		created: day(2016, time.March, 14), joined: day(2020, time.May, 5),
	},
	{
		global: "Julia Nowak", username: "julianowak", roles: []string{"members", "laser"},
		avatar:  "yellow_rose.lossy-with-alpha.webp",
		created: day(2022, time.July, 7), joined: day(2022, time.August, 1),
	},
	{
		global: "Omar Farouk", username: "omar.f",
		roles: []string{"members", "electronics", "woodshop"}, avatar: "tux.png",
		created: day(2017, time.December, 12), joined: day(2021, time.February, 17),
	},
	{
		global: "Freya Olsen", username: "freya.o",
		roles: []string{"mods", "members", "events"}, avatar: "video-005.gray.png",
		created: day(2019, time.March, 8), joined: day(2020, time.July, 21),
	},
	{
		global: "Workshop Bot", username: "shopbot", bot: true, unlinked: true,
		avatar: "triangle-001.gif", discriminator: "7311",
		created: day(2020, time.January, 2), joined: day(2020, time.January, 2),
	},
	{
		global: "Helga Brandt", username: "helga.b", roles: []string{"members", "woodshop"},
		avatar: "video-001.jpeg", departed: true,
		created: day(2016, time.October, 1), joined: day(2019, time.September, 16),
	},
	{
		global: "Mateo García", username: "mateo.g", roles: []string{"members", "laser"},
		departed: true,
		created:  day(2018, time.February, 2), joined: day(2020, time.September, 9),
	},
}

// Guild describes what Start seeded, for tests that need to find their way around it.
type Guild struct {
	ID      string
	Name    string
	Roles   []Role
	Groups  []Group
	Members []Member
}

// Role is a seeded Discord role.
type Role struct {
	ID    string
	Name  string
	Color int // 0xRRGGBB, 0 for none
}

// Group is a seeded Authentik group. Problem is "" for a group the bridge may manage or one
// without discord_role_id, else why the bridge must refuse its mapping.
type Group struct {
	Name    string
	UUID    string
	Mapping string // raw JSON of discord_role_id, "" when absent
	Problem string
}

// Member is a seeded person. UserPK is 0 for someone without an Authentik account; InGuild is
// false for former members whose Authentik account is still linked.
type Member struct {
	DiscordID   string
	Username    string
	DisplayName string
	UserPK      int32
	InGuild     bool
	Pending     bool
	// Avatar is "image" (a real picture), "default" (Discord's default), "broken" (a cut-off
	// PNG) or "guild" (a per-guild avatar).
	Avatar string
	Roles  []string // role names
}

// seedRoles gives the guild its roles.
func seedRoles(dc *discordstub.Server) []Role {
	var stubRoles []discordstub.Role
	var out []Role
	for i, r := range roles {
		sr := discordstub.ExampleRole()
		sr.ID, sr.Name, sr.Color, sr.Hoist = roleIDs[r.key], r.name, r.color, r.hoist
		sr.Position = len(roles) - i
		sr.Managed, sr.Mentionable = r.managed, !r.managed
		sr.Permissions = "1071698660929"
		sr.Tags = nil
		if r.managed {
			sr.Tags = json.RawMessage(`{"premium_subscriber":null}`)
		}
		stubRoles = append(stubRoles, sr)
		out = append(out, Role{ID: sr.ID, Name: r.name, Color: r.color})
	}
	dc.SetRoles(stubRoles...)
	return out
}

// seedGroups creates the Authentik groups and returns them with their UUIDs by name.
func seedGroups(ak *authentikstub.Server) ([]Group, map[string]string) {
	uuids := map[string]string{}
	var out []Group
	for _, g := range groups {
		attrs := "{}"
		if g.mapping != "" {
			attrs = `{"discord_role_id":` + g.mapping + `}`
		}
		id := ak.AddGroup(authentikstub.Group{
			Name: g.name, IsSuperuser: g.superuser, Attributes: json.RawMessage(attrs),
		})
		uuids[g.name] = id
		out = append(out, Group{Name: g.name, UUID: id, Mapping: g.mapping, Problem: g.problem})
	}
	return out, uuids
}

// memberOf builds the Discord member of p and serves its avatars on the CDN.
func memberOf(dc *discordstub.Server, p personSeed) (discordstub.Member, string, error) {
	id := snowflakeAt(p.created, len(p.username))
	m := discordstub.ExampleMember()
	m.User = discordstub.User{
		ID:            id,
		Username:      p.username,
		Discriminator: cmp.Or(p.discriminator, "0"),
		Bot:           p.bot,
		PublicFlags:   0,
	}
	if p.global != "" && !p.bot {
		m.User.GlobalName = discordstub.Ptr(p.global)
	}
	m.Nick = nil
	if p.nick != "" {
		m.Nick = discordstub.Ptr(p.nick)
	}
	m.Roles = []string{}
	for _, key := range p.roles {
		m.Roles = append(m.Roles, roleIDs[key])
	}
	m.JoinedAt = p.joined.Format(discordTime)
	if slices.Contains(p.roles, "booster") {
		m.PremiumSince = discordstub.Ptr(p.joined.AddDate(1, 0, 0).Format(discordTime))
	}
	m.Pending = p.pending
	m.Flags = 0

	kind := "default"
	if p.avatar != "" {
		hash, err := serveAvatar(dc, "avatars/"+id, p.avatar)
		if err != nil {
			return m, "", err
		}
		m.User.Avatar = &hash
		kind = "image"
		if p.avatar == brokenAvatar {
			kind = "broken"
		}
	}
	if p.guildAvatar != "" {
		hash, err := serveAvatar(dc, "guilds/"+guildID+"/users/"+id+"/avatars", p.guildAvatar)
		if err != nil {
			return m, "", err
		}
		m.Avatar = &hash
		kind = "guild"
	}
	return m, kind, nil
}

// serveAvatar puts an image on the stub CDN under dir and returns its hash. Like Discord it
// names GIFs with an "a_" hash. Discord would convert to PNG for the ".png" the bridge asks
// for; the stub serves the original bytes, so every decoder of the bridge gets used.
func serveAvatar(dc *discordstub.Server, dir, file string) (string, error) {
	body, err := avatarFiles.ReadFile(path.Join("testdata/avatars", file))
	if err != nil {
		return "", fmt.Errorf("avatar %s: %w", file, err)
	}
	sum := sha256.Sum256(append([]byte(dir+"/"), body...))
	hash := hex.EncodeToString(sum[:16])
	contentType := "image/png"
	switch path.Ext(file) {
	case ".gif":
		hash, contentType = "a_"+hash, "image/gif"
	case ".jpeg":
		contentType = "image/jpeg"
	case ".webp":
		contentType = "image/webp"
	}
	dc.SetAvatar(dir+"/"+hash+".png", contentType, body)
	return hash, nil
}

// defaultAvatarColors are the backgrounds of Discord's six default avatars.
var defaultAvatarColors = []color.NRGBA{
	{0x58, 0x65, 0xF2, 0xff}, {0x75, 0x7E, 0x8A, 0xff}, {0x3B, 0xA5, 0x5C, 0xff},
	{0xFA, 0xA6, 0x1A, 0xff}, {0xED, 0x42, 0x45, 0xff}, {0xEB, 0x45, 0x9F, 0xff},
}

// serveDefaultAvatars draws stand-ins for Discord's default avatars (a white face on each
// colour) and serves them where the CDN keeps them.
func serveDefaultAvatars(dc *discordstub.Server) error {
	const side = 256
	for i, bg := range defaultAvatarColors {
		img := image.NewNRGBA(image.Rect(0, 0, side, side))
		for y := range side {
			for x := range side {
				c := bg
				if inFace(x, y, side) {
					c = color.NRGBA{0xff, 0xff, 0xff, 0xff}
				}
				img.SetNRGBA(x, y, c)
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			return fmt.Errorf("default avatar %d: %w", i, err)
		}
		dc.SetAvatar(fmt.Sprintf("embed/avatars/%d.png", i), "image/png", buf.Bytes())
	}
	return nil
}

// inFace reports whether (x, y) is on the face: a disc with two eyes cut out.
func inFace(x, y, side int) bool {
	in := func(cx, cy, r float64) bool {
		dx, dy := float64(x)-cx, float64(y)-cy
		return dx*dx+dy*dy <= r*r
	}
	s := float64(side)
	return in(s/2, s/2, s*0.32) && !in(s*0.4, s*0.45, s*0.05) && !in(s*0.6, s*0.45, s*0.05)
}

// seedPeople adds the members to the guild and their accounts to Authentik, with the drift the
// old mapping left, and returns what was seeded.
func seedPeople(dc *discordstub.Server, ak *authentikstub.Server, groupUUID map[string]string,
) ([]Member, map[string]discordstub.Member, error) {
	var out []Member
	current := map[string]discordstub.Member{}
	for _, p := range people {
		m, kind, err := memberOf(dc, p)
		if err != nil {
			return nil, nil, err
		}
		if slices.ContainsFunc(out, func(o Member) bool { return o.DiscordID == m.User.ID }) {
			return nil, nil, fmt.Errorf("seed member %s: id %s is taken", p.username, m.User.ID)
		}
		var names []string
		for _, key := range p.roles {
			names = append(names, roleName(key))
		}
		rec := Member{
			DiscordID: m.User.ID, Username: p.username, DisplayName: cmp.Or(p.global, p.username),
			InGuild: !p.departed, Pending: p.pending, Avatar: kind, Roles: names,
		}
		if !p.departed {
			if err := dc.SetMember(m); err != nil {
				return nil, nil, fmt.Errorf("seed member %s: %w", p.username, err)
			}
			current[m.User.ID] = m
		}
		if !p.unlinked {
			rec.UserPK = seedAccount(ak, p, m.User.ID, groupUUID)
		}
		out = append(out, rec)
	}
	return out, current, nil
}

// seedAccount creates the Authentik user of p, linked to its Discord ID, in the groups the old
// mapping gave it.
func seedAccount(ak *authentikstub.Server, p personSeed, discordID string,
	groupUUID map[string]string,
) int32 {
	attrs := `{"settings":{"locale":"en"}}`
	if p.username == "sofia.rossi" {
		// What the old property mapping stored: the avatar inline, which the bridge replaces
		// with a hosted URL.
		attrs = `{"settings":{"locale":"it"},"avatar":"data:image/png;base64,` +
			`iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGA` +
			`hKmMIQAAAABJRU5ErkJggg=="}`
	}
	pk := ak.AddUser(authentikstub.User{
		Username:   p.username,
		Name:       cmp.Or(p.global, p.username),
		Email:      strings.ReplaceAll(p.username, "_", ".") + "@example.org",
		IsActive:   true,
		Type:       "external",
		Attributes: json.RawMessage(attrs),
	})
	ak.AddConnection(sourceSlug, pk, discordID)

	var want []string
	for i, key := range p.roles {
		if i == 1 && p.drift == "missing" {
			continue // the old mapping missed this one
		}
		want = append(want, groupsOf(key)...)
	}
	if extra, ok := strings.CutPrefix(p.drift, "extra:"); ok {
		want = append(want, extra)
	}
	if len(p.username)%3 == 0 {
		want = append(want, "newsletter")
	}
	if p.username == adminLogin.Username {
		want = append(want, adminGroup)
	}
	slices.Sort(want)
	for _, g := range slices.Compact(want) {
		ak.AddMember(groupUUID[g], pk)
	}
	return pk
}

func roleName(key string) string {
	for _, r := range roles {
		if r.key == key {
			return r.name
		}
	}
	return key
}
