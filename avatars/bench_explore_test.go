package avatars

import (
	"bytes"
	"image"
	"os"
	"testing"

	"github.com/disintegration/imaging"
)

func BenchmarkExplore(b *testing.B) {
	data, _ := os.ReadFile("testdata/tux.png")
	src, _, _ := image.Decode(bytes.NewReader(data))
	for _, n := range []int{512, 4096} {
		big := imaging.Resize(src, n, n, imaging.Lanczos)
		var rgba image.Image = big
		b.Run("render", func(b *testing.B) {
			for b.Loop() {
				render(rgba, 64)
			}
		})
		b.Run("fill", func(b *testing.B) {
			for b.Loop() {
				imaging.Fill(rgba, 64, 64, imaging.Center, imaging.Lanczos)
			}
		})
		sq := imaging.Fill(rgba, 64, 64, imaging.Center, imaging.Lanczos)
		b.Run("compact+encode", func(b *testing.B) {
			for b.Loop() {
				render(sq, 64)
			}
		})
	}
}
