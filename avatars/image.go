package avatars

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/png"
	"sync"

	// Registered for image.Decode: the formats Discord's CDN serves.
	_ "image/gif"
	_ "image/jpeg"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp"
)

// Defaults of Limits and of the stored edge.
const (
	DefaultEdge      = 64
	DefaultMaxPixels = 4096 * 4096
	DefaultMaxSide   = 8192
)

// Limits bound the images Process decodes. A small file can declare a huge picture (a
// decompression bomb), so these are checked against the header before any pixel is decoded.
type Limits struct {
	MaxPixels int // width × height; DefaultMaxPixels when zero
	MaxSide   int // either edge; DefaultMaxSide when zero
}

func (l Limits) withDefaults() Limits {
	if l.MaxPixels <= 0 {
		l.MaxPixels = DefaultMaxPixels
	}
	if l.MaxSide <= 0 {
		l.MaxSide = DefaultMaxSide
	}
	return l
}

// Process turns a PNG, JPEG (CMYK too), GIF (its first frame) or WebP into a PNG of edge×edge
// pixels: the centred square of the source, scaled with a Lanczos filter. The same input
// always gives the same bytes, so Key names the result stably.
func Process(data []byte, edge int, lim Limits) ([]byte, error) {
	if edge <= 0 {
		edge = DefaultEdge
	}
	lim = lim.withDefaults()

	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if errors.Is(err, image.ErrFormat) {
		return nil, newError(KindNotImage, false, "not an image in a format we read "+
			"(png, jpeg, gif, webp)")
	}
	if err != nil {
		return nil, newError(KindDecode, false, "read image header: %w", err)
	}
	w, h := cfg.Width, cfg.Height
	if w <= 0 || h <= 0 {
		return nil, newError(KindDecode, false, "%s declares %d×%d pixels", format, w, h)
	}
	// Compared in int64 so that two large sides cannot overflow into a small product.
	if w > lim.MaxSide || h > lim.MaxSide || int64(w)*int64(h) > int64(lim.MaxPixels) {
		return nil, newError(KindTooManyPixels, false,
			"%s declares %d×%d pixels, over the limit of %d pixels and %d per side",
			format, w, h, lim.MaxPixels, lim.MaxSide)
	}

	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, newError(KindDecode, false, "decode %s: %w", format, err)
	}
	return render(img, edge)
}

// render crops img to its centred square, scales it to edge×edge and encodes it as PNG.
//
// A Lanczos filter costs in proportion to the scale factor, so a large source is first
// averaged down by a whole factor to between two and four times edge, which is cheap and
// loses nothing the final resampling would keep, and Lanczos does the last step.
func render(img image.Image, edge int) ([]byte, error) {
	b := img.Bounds()
	side := min(b.Dx(), b.Dy())
	factor := side / (2 * edge)
	if factor >= 2 {
		side -= side % factor
	}
	x0 := b.Min.X + (b.Dx()-side)/2
	y0 := b.Min.Y + (b.Dy()-side)/2
	square := imaging.Crop(img, image.Rect(x0, y0, x0+side, y0+side))
	if factor >= 2 {
		square = shrink(square, factor)
	}
	if square.Rect.Dx() != edge {
		square = imaging.Resize(square, edge, edge, imaging.Lanczos)
	}

	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, compact(square)); err != nil {
		return nil, newError(KindEncode, false, "encode png: %w", err)
	}
	return buf.Bytes(), nil
}

// shrink averages each factor×factor block of m into one pixel. Colours are weighted by their
// alpha, so fully transparent pixels, whatever colour they carry, do not tint the edges.
func shrink(m *image.NRGBA, factor int) *image.NRGBA {
	w, h := m.Rect.Dx()/factor, m.Rect.Dy()/factor
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	sums := make([]uint64, 4*w)
	for oy := range h {
		clear(sums)
		for y := oy * factor; y < (oy+1)*factor; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w*factor]
			for ox := range w {
				s := sums[4*ox : 4*ox+4 : 4*ox+4]
				px := row[4*ox*factor : 4*(ox+1)*factor]
				for i := 0; i < len(px); i += 4 {
					a := uint64(px[i+3])
					s[0] += uint64(px[i]) * a
					s[1] += uint64(px[i+1]) * a
					s[2] += uint64(px[i+2]) * a
					s[3] += a
				}
			}
		}
		dst := out.Pix[oy*out.Stride : oy*out.Stride+4*w]
		n := uint64(factor * factor)
		for ox := range w {
			s := sums[4*ox : 4*ox+4]
			if a := s[3]; a > 0 {
				// Rounded division: the weighted mean colour, and the mean alpha.
				dst[4*ox] = uint8((s[0] + a/2) / a)
				dst[4*ox+1] = uint8((s[1] + a/2) / a)
				dst[4*ox+2] = uint8((s[2] + a/2) / a)
				dst[4*ox+3] = uint8((a + n/2) / n)
			}
		}
	}
	return out
}

// pngEncoder uses zlib's default level: on the test avatars BestCompression saved under 1% of
// the bytes for four times the time (about 4 ms against 1 ms at 64 px). Reusing the encoder
// state saves allocating zlib's tables on every avatar.
var pngEncoder = png.Encoder{CompressionLevel: png.DefaultCompression, BufferPool: &encoderPool{}}

type encoderPool struct{ p sync.Pool }

func (ep *encoderPool) Get() *png.EncoderBuffer {
	b, _ := ep.p.Get().(*png.EncoderBuffer)
	return b
}

func (ep *encoderPool) Put(b *png.EncoderBuffer) { ep.p.Put(b) }

// Key is the name a processed avatar is stored under: the SHA-256 of its bytes in hex, and
// ".png". Equal pictures share one object, and a name never changes its content, which is what
// lets every copy be cached for a year.
func Key(pngBytes []byte) string {
	sum := sha256.Sum256(pngBytes)
	return hex.EncodeToString(sum[:]) + ".png"
}

// compact picks the smallest lossless form the PNG encoder can write for m: 8-bit grey for an
// opaque grey picture, a palette when it has at most 256 colours (default avatars, GIFs, flat
// logos), else m itself, which the encoder writes as RGB when every pixel is opaque.
func compact(m *image.NRGBA) image.Image {
	b := m.Bounds()
	grey, opaque := true, true
	index := make(map[color.NRGBA]uint8, 256)
	palette := make(color.Palette, 0, 256)
	tooMany := false

	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := m.NRGBAAt(x, y)
			if c.A != 0xff {
				opaque = false
			}
			if c.R != c.G || c.G != c.B {
				grey = false
			}
			if tooMany {
				continue
			}
			if _, ok := index[c]; !ok {
				if len(palette) == 256 {
					tooMany = true
					continue
				}
				index[c] = uint8(len(palette))
				palette = append(palette, c)
			}
		}
	}

	switch {
	case grey && opaque:
		g := image.NewGray(b)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				g.SetGray(x, y, color.Gray{Y: m.NRGBAAt(x, y).R})
			}
		}
		return g
	case !tooMany:
		p := image.NewPaletted(b, palette)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				p.SetColorIndex(x, y, index[m.NRGBAAt(x, y)])
			}
		}
		return p
	default:
		return m
	}
}
