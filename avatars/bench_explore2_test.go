package avatars

import (
	"bytes"
	"image"
	"os"
	"testing"

	"github.com/disintegration/imaging"
)

func BenchmarkExplore2(b *testing.B) {
	data, _ := os.ReadFile("testdata/tux.png")
	src, _, _ := image.Decode(bytes.NewReader(data))
	big := imaging.Resize(src, 512, 512, imaging.Lanczos)
	b.Run("crop", func(b *testing.B) {
		for b.Loop() {
			imaging.Crop(big, big.Rect)
		}
	})
	b.Run("shrink", func(b *testing.B) {
		for b.Loop() {
			shrink(big, 4)
		}
	})
	s := shrink(big, 4)
	b.Run("lanczos", func(b *testing.B) {
		for b.Loop() {
			imaging.Resize(s, 64, 64, imaging.Lanczos)
		}
	})
	b.Run("catmull", func(b *testing.B) {
		for b.Loop() {
			imaging.Resize(s, 64, 64, imaging.CatmullRom)
		}
	})
}
