package avatars

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	cdn        = "https://cdn.discordapp.com"
	userID     = "80351110224678912" // Discord's documented example user
	guildID    = "41771983423143937"
	userHash   = "8342729096ea3675442027381ff50dfe"
	guildHash  = "1269e74af4df7417b13759eae50c83dc"
	animHash   = "a_1269e74af4df7417b13759eae50c83dc"
	migratedID = "1234567890123456789"
)

func TestSourceFor(t *testing.T) {
	tests := []struct {
		name        string
		m           Member
		preferGuild bool
		want        Source
	}{
		{
			name: "user avatar",
			m:    Member{UserID: userID, GuildID: guildID, UserAvatar: userHash},
			want: Source{
				URL:  cdn + "/avatars/" + userID + "/" + userHash + ".png?size=128",
				Hash: userHash,
			},
		},
		{
			name: "animated user avatar asks for a still png",
			m:    Member{UserID: userID, UserAvatar: animHash},
			want: Source{
				URL:  cdn + "/avatars/" + userID + "/" + animHash + ".png?size=128",
				Hash: animHash,
			},
		},
		{
			name: "guild avatar preferred",
			m: Member{UserID: userID, GuildID: guildID, UserAvatar: userHash,
				GuildAvatar: guildHash},
			preferGuild: true,
			want: Source{
				URL: cdn + "/guilds/" + guildID + "/users/" + userID + "/avatars/" + guildHash +
					".png?size=128",
				Hash: guildHash,
			},
		},
		{
			name:        "guild avatar preferred but none set",
			m:           Member{UserID: userID, GuildID: guildID, UserAvatar: userHash},
			preferGuild: true,
			want: Source{
				URL:  cdn + "/avatars/" + userID + "/" + userHash + ".png?size=128",
				Hash: userHash,
			},
		},
		{
			name: "guild avatar set but not preferred",
			m: Member{UserID: userID, GuildID: guildID, UserAvatar: userHash,
				GuildAvatar: guildHash},
			want: Source{
				URL:  cdn + "/avatars/" + userID + "/" + userHash + ".png?size=128",
				Hash: userHash,
			},
		},
		{
			name: "no avatar, migrated user",
			m:    Member{UserID: migratedID, Discriminator: "0"},
			want: Source{URL: cdn + "/embed/avatars/1.png", Hash: "default-1"},
		},
		{
			name: "no avatar, no discriminator",
			m:    Member{UserID: userID},
			want: Source{URL: cdn + "/embed/avatars/5.png", Hash: "default-5"},
		},
		{
			name: "no avatar, legacy discriminator",
			m:    Member{UserID: userID, Discriminator: "1337"},
			want: Source{URL: cdn + "/embed/avatars/2.png", Hash: "default-2"},
		},
		{
			name:        "no avatar at all, guild preferred",
			m:           Member{UserID: migratedID, GuildID: guildID, Discriminator: "0"},
			preferGuild: true,
			want:        Source{URL: cdn + "/embed/avatars/1.png", Hash: "default-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SourceFor(cdn, tt.m, tt.preferGuild, 64)
			if err != nil {
				t.Fatalf("SourceFor: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SourceFor (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSourceFor_invalid(t *testing.T) {
	tests := []struct {
		name string
		m    Member
	}{
		{"no user id", Member{UserAvatar: userHash}},
		{"user id not a number", Member{UserID: "../../x", UserAvatar: userHash}},
		{"hash with a slash", Member{UserID: userID, UserAvatar: "../../etc/passwd"}},
		{"hash with a query", Member{UserID: userID, UserAvatar: "abc.png?x=1"}},
		{"guild hash without guild id", Member{UserID: userID, GuildAvatar: guildHash}},
		{"discriminator not a number", Member{UserID: userID, Discriminator: "abcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SourceFor(cdn, tt.m, true, 64)
			wantKind(t, err, KindMember, false)
			if got != (Source{}) {
				t.Errorf("SourceFor returned %+v with an error", got)
			}
		})
	}
}

func TestDefaultAvatarIndex(t *testing.T) {
	tests := []struct {
		id, discriminator string
		want              int
	}{
		{userID, "0", 5},     // (80351110224678912 >> 22) % 6
		{migratedID, "0", 1}, // (1234567890123456789 >> 22) % 6
		{"123456789012345678", "", 0},
		{userID, "0001", 1},
		{userID, "1337", 2},
		{userID, "9999", 4},
		{"18446744073709551615", "0", int((uint64(18446744073709551615) >> 22) % 6)},
	}
	for _, tt := range tests {
		got, err := DefaultAvatarIndex(tt.id, tt.discriminator)
		if err != nil || got != tt.want {
			t.Errorf("DefaultAvatarIndex(%s, %q) = %d, %v; want %d", tt.id, tt.discriminator,
				got, err, tt.want)
		}
	}
}

func TestCDNSize(t *testing.T) {
	for edge, want := range map[int]int{
		1: 16, 8: 16, 16: 32, 32: 64, 64: 128, 100: 256, 128: 256, 2048: 4096, 3000: 4096,
	} {
		if got := CDNSize(edge); got != want {
			t.Errorf("CDNSize(%d) = %d, want %d", edge, got, want)
		}
	}
}
