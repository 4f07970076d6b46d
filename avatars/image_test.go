package avatars

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/disintegration/imaging"
	"github.com/google/go-cmp/cmp"
)

func TestProcess_realImages(t *testing.T) {
	const maxBytes = 10 << 10
	tests := []struct {
		file        string
		translucent bool // some pixels of the result are not opaque
		grey        bool // every pixel of the result is grey
	}{
		{file: "video-001.png"},
		{file: "video-001.jpeg"},
		{file: "video-001.cmyk.jpeg"},
		{file: "video-001.gif"},
		{file: "video-005.gray.png", grey: true},
		{file: "triangle-001.gif", translucent: true}, // transparent background
		{file: "tux.png", translucent: true},
		{file: "go-turns-two-280x360.jpeg"},
		{file: "blue-purple-pink.lossy.webp"},
		{file: "blue-purple-pink.lossless.webp"},
		{file: "yellow_rose.lossy-with-alpha.webp", translucent: true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src := readTestdata(t, tt.file)
			out, err := Process(src, 64, Limits{})
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if len(out) > maxBytes {
				t.Errorf("png is %d bytes, want at most %d", len(out), maxBytes)
			}
			img := decodePNG(t, out)
			if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 64 {
				t.Fatalf("size = %v, want 64×64", b.Size())
			}

			translucent, grey := false, true
			for y := range 64 {
				for x := range 64 {
					c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
					translucent = translucent || c.A != 0xff
					grey = grey && c.R == c.G && c.G == c.B
				}
			}
			if translucent != tt.translucent {
				t.Errorf("translucent = %v, want %v", translucent, tt.translucent)
			}
			if grey != tt.grey {
				t.Errorf("grey = %v, want %v", grey, tt.grey)
			}

			again, err := Process(src, 64, Limits{})
			if err != nil || !bytes.Equal(again, out) {
				t.Errorf("second Process gave other bytes (err %v): keys would differ", err)
			}
		})
	}
}

func TestProcess_centreCrop(t *testing.T) {
	// Thirds: red, green, blue. Only the green middle is in the centred square of a 3:1
	// picture, and the same turned upright.
	for _, size := range []image.Point{{600, 200}, {200, 600}, {96, 32}} {
		m := image.NewNRGBA(image.Rect(0, 0, size.X, size.Y))
		long := max(size.X, size.Y)
		for y := range size.Y {
			for x := range size.X {
				third := max(x, y) * 3 / long
				c := [3]color.NRGBA{{R: 255, A: 255}, {G: 255, A: 255}, {B: 255, A: 255}}[third]
				m.SetNRGBA(x, y, c)
			}
		}
		var src bytes.Buffer
		if err := png.Encode(&src, m); err != nil {
			t.Fatal(err)
		}

		out, err := Process(src.Bytes(), 64, Limits{})
		if err != nil {
			t.Fatalf("%v: Process: %v", size, err)
		}
		img := decodePNG(t, out)
		// The filter may blend the outermost pixels with the neighbouring thirds.
		for _, p := range []image.Point{{32, 32}, {3, 3}, {60, 60}, {3, 60}} {
			c := color.NRGBAModel.Convert(img.At(p.X, p.Y)).(color.NRGBA)
			if c.G < 200 || c.R > 60 || c.B > 60 {
				t.Errorf("%v: pixel %v = %v, want green (the centre third)", size, p, c)
			}
		}
	}
}

func TestProcess_badInput(t *testing.T) {
	tests := []struct {
		name     string
		data     []byte
		kind     Kind
		contains string
	}{
		{"truncated png", readTestdata(t, "video-001.cut-at-15000.png"), KindDecode,
			"not enough pixel data"},
		{"text", []byte("this is not an image at all"), KindNotImage, "not an image"},
		{"html", []byte("<!doctype html><html><body>Bad Gateway</body></html>"),
			KindNotImage, "not an image"},
		{"empty", nil, KindNotImage, "not an image"},
		{"png signature only", []byte("\x89PNG\r\n\x1a\n"), KindDecode, "read image header"},
		{"zero width", pngHeader(0, 10), KindDecode, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Process(tt.data, 64, Limits{})
			if out != nil {
				t.Errorf("Process returned %d bytes with an error", len(out))
			}
			wantKind(t, err, tt.kind, false)
			if err != nil && !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %q, want it to say %q", err, tt.contains)
			}
		})
	}
}

func TestProcess_pixelLimits(t *testing.T) {
	tests := []struct {
		name string
		w, h uint32
		lim  Limits
		ok   bool // within the limits: fails later, at decoding the bogus IDAT
	}{
		{"bomb 100000×100000", 100000, 100000, Limits{}, false},
		{"side over 8192", 9000, 10, Limits{}, false},
		{"over 16.7 Mpx", 5000, 5000, Limits{}, false},
		{"million per side", 1 << 20, 1 << 20, Limits{}, false},
		{"tighter limit", 300, 300, Limits{MaxPixels: 256 * 256}, false},
		{"4096×4096 is allowed", 4096, 4096, Limits{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Process(pngHeader(tt.w, tt.h), 64, tt.lim)
			if tt.ok {
				wantKind(t, err, KindDecode, false)
				return
			}
			wantKind(t, err, KindTooManyPixels, false)
		})
	}
}

func TestProcess_bombAllocatesLittle(t *testing.T) {
	// 100000×100000 RGBA would take 40 GB; refusing it from the header must cost next to
	// nothing.
	bomb := pngHeader(100000, 100000)
	const limit = 2 << 20

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := Process(bomb, 64, Limits{}); KindOf(err) != KindTooManyPixels {
			t.Fatalf("err = %v, want %s", err, KindTooManyPixels)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > limit {
		t.Errorf("refusing the bomb allocated %d bytes per call, want at most %d", per, limit)
	}

	allocs := testing.AllocsPerRun(10, func() { _, _ = Process(bomb, 64, Limits{}) })
	if allocs > 50 {
		t.Errorf("refusing the bomb made %.0f allocations, want at most 50", allocs)
	}
}

func TestShrink_alpha(t *testing.T) {
	// Each 2×2 block: two transparent red pixels and two opaque blue ones. Transparent
	// pixels must not tint the result red.
	n := image.NewNRGBA(image.Rect(0, 0, 4, 4))
	r := image.NewRGBA(n.Rect)
	for y := range 4 {
		for x := range 4 {
			c := color.NRGBA{R: 255, A: 0}
			if x%2 == 0 {
				c = color.NRGBA{B: 255, A: 255}
			}
			n.SetNRGBA(x, y, c)
			r.Set(x, y, c)
		}
	}
	gray := image.NewGray(n.Rect) // goes through the converting path
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 16)
	}

	want := color.NRGBA{B: 255, A: 128}
	for name, img := range map[string]image.Image{"nrgba": n, "rgba": r} {
		got := shrink(img, n.Rect, 2)
		if got.Rect.Dx() != 2 || got.Rect.Dy() != 2 {
			t.Fatalf("%s: size %v, want 2×2", name, got.Rect.Size())
		}
		for y := range 2 {
			for x := range 2 {
				if c := got.NRGBAAt(x, y); c != want {
					t.Errorf("%s: pixel (%d,%d) = %v, want %v", name, x, y, c, want)
				}
			}
		}
	}

	// Grey rows 0..3 hold 0,16,32,48 / 64,… : the top-left block averages 0,16,64,80 to 40.
	if c := shrink(gray, gray.Rect, 2).NRGBAAt(0, 0); c != (color.NRGBA{40, 40, 40, 255}) {
		t.Errorf("grey block = %v, want {40 40 40 255}", c)
	}
}

func TestCompact_lossless(t *testing.T) {
	const side = 32 // 1024 pixels: room for more than 256 colours
	rng := rand.New(rand.NewPCG(1, 2))
	grey := image.NewNRGBA(image.Rect(0, 0, side, side))
	few := image.NewNRGBA(grey.Rect)
	many := image.NewNRGBA(grey.Rect)
	for y := range side {
		for x := range side {
			v := uint8(rng.IntN(256))
			grey.SetNRGBA(x, y, color.NRGBA{v, v, v, 255})
			few.SetNRGBA(x, y, color.NRGBA{uint8(x % 3 * 100), 0, 9, uint8(y % 2 * 255)})
			many.SetNRGBA(x, y, color.NRGBA{v, uint8(x * 8), uint8(y * 8), 200})
		}
	}
	tests := []struct {
		name string
		m    *image.NRGBA
		want string
	}{
		{"grey", grey, "*image.Gray"},
		{"few colours", few, "*image.Paletted"},
		{"many colours", many, "*image.NRGBA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compact(tt.m)
			if got := typeName(c); got != tt.want {
				t.Errorf("compact gave %s, want %s", got, tt.want)
			}
			b, err := encode(c)
			if err != nil {
				t.Fatal(err)
			}
			back := decodePNG(t, b)
			for y := range side {
				for x := range side {
					got := color.NRGBAModel.Convert(back.At(x, y)).(color.NRGBA)
					if want := tt.m.NRGBAAt(x, y); got != want {
						t.Fatalf("pixel (%d,%d) = %v after encoding, want %v", x, y, got, want)
					}
				}
			}
		})
	}
}

func TestProcess_noiseStaysInBudget(t *testing.T) {
	// Random pixels do not compress: losslessly they need more than 12 KB at 64×64, so the
	// palette fallback has to bring them under the budget.
	rng := rand.New(rand.NewPCG(3, 4))
	m := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	lossless, err := encode(compact(m))
	if err != nil {
		t.Fatal(err)
	}
	if len(lossless) <= budget(64) {
		t.Fatalf("noise encodes to %d bytes losslessly; the test needs more than %d",
			len(lossless), budget(64))
	}

	var src bytes.Buffer
	if err := png.Encode(&src, m); err != nil {
		t.Fatal(err)
	}
	out, err := Process(src.Bytes(), 64, Limits{})
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if len(out) > budget(64) {
		t.Errorf("png is %d bytes, want at most %d", len(out), budget(64))
	}
	if b := decodePNG(t, out).Bounds(); b.Dx() != 64 || b.Dy() != 64 {
		t.Errorf("size = %v, want 64×64", b.Size())
	}
	again, _ := Process(src.Bytes(), 64, Limits{})
	if !bytes.Equal(again, out) {
		t.Error("quantized output differs between runs: keys would differ")
	}
}

func TestKey(t *testing.T) {
	got := Key([]byte("abc"))
	want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Key (-want +got):\n%s", diff)
	}
	if !ValidKey(got) {
		t.Errorf("ValidKey(%q) = false", got)
	}
	for _, bad := range []string{"", "../x.png", strings.ToUpper(got), got + "/", "a" + got,
		strings.TrimSuffix(got, ".png") + ".jpg"} {
		if ValidKey(bad) {
			t.Errorf("ValidKey(%q) = true", bad)
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *image.Gray:
		return "*image.Gray"
	case *image.Paletted:
		return "*image.Paletted"
	case *image.NRGBA:
		return "*image.NRGBA"
	default:
		return "other"
	}
}

func TestShrink_matchesConvertedSource(t *testing.T) {
	// Each fast path must agree with shrinking the same pixels converted to NRGBA first, on
	// a square that does not start at the origin.
	const w, h = 61, 47
	r := image.Rect(7, 5, 7+36, 5+36)
	rng := rand.New(rand.NewPCG(5, 6))
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range nrgba.Pix {
		nrgba.Pix[i] = uint8(rng.IntN(256))
	}
	opaque := image.NewRGBA(nrgba.Rect)
	for i := range opaque.Pix {
		opaque.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			opaque.Pix[i] = 255
		}
	}
	sources := map[string]image.Image{"nrgba": nrgba, "rgba": opaque}
	for _, ratio := range []image.YCbCrSubsampleRatio{
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422,
		image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio440,
		image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
	} {
		m := image.NewYCbCr(image.Rect(0, 0, w, h), ratio)
		// Mid-range values keep the conversion away from clamping, where averaging before
		// and after converting may differ.
		for i := range m.Y {
			m.Y[i] = uint8(64 + rng.IntN(128))
		}
		for i := range m.Cb {
			m.Cb[i], m.Cr[i] = uint8(100+rng.IntN(56)), uint8(100+rng.IntN(56))
		}
		sources["ycbcr "+ratio.String()] = m
	}

	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			for _, factor := range []int{2, 3, 4} {
				got := shrink(src, r, factor)
				converted := imaging.Crop(src, r)
				want := shrink(converted, converted.Rect, factor)
				if got.Rect != want.Rect {
					t.Fatalf("factor %d: size %v, want %v", factor, got.Rect, want.Rect)
				}
				for i := range got.Pix {
					if d := int(got.Pix[i]) - int(want.Pix[i]); d < -2 || d > 2 {
						t.Fatalf("factor %d: byte %d = %d, want %d (±2)", factor, i,
							got.Pix[i], want.Pix[i])
					}
				}
			}
		})
	}
}
