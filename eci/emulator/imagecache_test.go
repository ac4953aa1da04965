package emulator

import (
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

func describeCaches(t *testing.T, c *sdkeci.Client, set func(*sdkeci.DescribeImageCachesRequest)) []sdkeci.DescribeImageCachesImageCache0 {
	t.Helper()
	d := sdkeci.CreateDescribeImageCachesRequest()
	d.Scheme = "http"
	if set != nil {
		set(d)
	}
	r, err := c.DescribeImageCaches(d)
	if err != nil {
		t.Fatal(err)
	}
	return r.ImageCaches
}

// The image-cache actions with the typed SDK requests (UpdateImageCache,
// not in the old SDK, by CommonRequest): validation, Preparing ->
// Creating -> Ready, filters, a rebuild on new images, delete.
func TestImageCaches(t *testing.T) {
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "sim", Delays: Delays{ImageCache: 400 * time.Millisecond}})
	c := sdkClient(t, ep, testID, testSecret)
	create := func(name string, images ...string) *sdkeci.CreateImageCacheRequest {
		r := sdkeci.CreateCreateImageCacheRequest()
		r.Scheme, r.ImageCacheName, r.Image = "http", name, images
		r.SecurityGroupId, r.VSwitchId = "sg-1", "vsw-1"
		return r
	}
	noName := create("", "busybox")
	badSize := create("c-size", "busybox")
	badSize.ImageCacheSize = requests.NewInteger(0)
	for name, tc := range map[string]struct {
		req  *sdkeci.CreateImageCacheRequest
		code string
	}{
		"no name":   {noName, "MissingParameter"},
		"no image":  {create("c-none"), "MissingParameter"},
		"bad name":  {create("Cache_1", "busybox"), "InvalidParameter"},
		"bad image": {create("c-bad", "busy box"), "InvalidParameter"},
		"bad size":  {badSize, "InvalidParameter"},
	} {
		_, err := c.CreateImageCache(tc.req)
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s %s, want %s", name, se.ErrorCode(), se.Message(), tc.code)
		}
	}

	web := create("web", "nginx:1.25", "busybox:1.36")
	web.RetentionDays = requests.NewInteger(7)
	r, err := c.CreateImageCache(web)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ImageCacheId, "imc-") || !strings.HasPrefix(r.ContainerGroupId, "eci-") {
		t.Fatalf("answer %+v", r)
	}
	seen := map[string]bool{}
	var ready sdkeci.DescribeImageCachesImageCache0
	waitFor(t, "the cache Ready", func() bool {
		got := describeCaches(t, c, func(d *sdkeci.DescribeImageCachesRequest) { d.ImageCacheId = r.ImageCacheId })
		if len(got) != 1 {
			t.Fatalf("described %d caches", len(got))
		}
		seen[got[0].Status] = true
		ready = got[0]
		return ready.Status == "Ready"
	})
	if !seen["Creating"] {
		t.Errorf("never seen Creating: %v", seen)
	}
	if ready.Progress != "100%" || ready.SnapshotId == "" || ready.ContainerGroupId != r.ContainerGroupId || len(ready.Images) != 2 || ready.ExpireDateTime == "" {
		t.Errorf("ready cache %+v", ready)
	}
	other, err := c.CreateImageCache(create("other", "redis:7"))
	if err != nil {
		t.Fatal(err)
	}
	if got := describeCaches(t, c, func(d *sdkeci.DescribeImageCachesRequest) { d.Image = "nginx:1.25" }); len(got) != 1 || got[0].ImageCacheName != "web" {
		t.Errorf("by image: %+v", got)
	}
	if got := describeCaches(t, c, func(d *sdkeci.DescribeImageCachesRequest) { d.SnapshotId = ready.SnapshotId }); len(got) != 1 {
		t.Errorf("by snapshot: %+v", got)
	}
	if got := describeCaches(t, c, nil); len(got) != 2 {
		t.Errorf("all: %d caches", len(got))
	}
	match, err := commonCall(c, "http", "DescribeImageCaches", map[string]string{"MatchImage.1": "nginx:1.25", "MatchImage.2": "redis:7", "ImageFullMatch": "true"})
	if err != nil || match["TotalCount"].(float64) != 0 {
		t.Errorf("full match of images no cache holds together: %v %v", match, err)
	}

	// UpdateImageCache: new images rebuild the cache.
	_, err = commonCall(c, "http", "UpdateImageCache", map[string]string{"ImageCacheId": r.ImageCacheId, "Image.1": "nginx:1.27", "Tag.1.Key": "team", "Tag.1.Value": "web"})
	if err != nil {
		t.Fatal(err)
	}
	got := describeCaches(t, c, func(d *sdkeci.DescribeImageCachesRequest) { d.ImageCacheId = r.ImageCacheId })
	if got[0].Status != "Updating" {
		t.Errorf("right after the update: %s", got[0].Status)
	}
	_, err = commonCall(c, "http", "UpdateImageCache", map[string]string{"ImageCacheId": r.ImageCacheId, "ImageCacheName": "web2"})
	if se := serverError(t, err); se.ErrorCode() != "IncorrectStatus" {
		t.Errorf("update while Updating: %s", se.ErrorCode())
	}
	rebuilt := waitImageCache(t, c, r.ImageCacheId, "Ready")
	if len(rebuilt.Images) != 1 || rebuilt.Images[0] != "nginx:1.27" || rebuilt.SnapshotId == ready.SnapshotId {
		t.Errorf("rebuilt cache %+v", rebuilt)
	}
	for name, tc := range map[string]struct {
		action string
		q      map[string]string
		code   string
	}{
		"update no id":   {"UpdateImageCache", map[string]string{}, "MissingParameter"},
		"update unknown": {"UpdateImageCache", map[string]string{"ImageCacheId": "imc-nope"}, "InvalidImageCache.NotFound"},
		"update bad lru": {"UpdateImageCache", map[string]string{"ImageCacheId": r.ImageCacheId, "EliminationStrategy": "FIFO"}, "InvalidParameter"},
		"delete unknown": {"DeleteImageCache", map[string]string{"ImageCacheId": "imc-nope"}, "InvalidImageCache.NotFound"},
		"delete no id":   {"DeleteImageCache", map[string]string{}, "MissingParameter"},
	} {
		_, err := commonCall(c, "http", tc.action, tc.q)
		if se := serverError(t, err); se.ErrorCode() != tc.code {
			t.Errorf("%s: %s, want %s", name, se.ErrorCode(), tc.code)
		}
	}

	del := sdkeci.CreateDeleteImageCacheRequest()
	del.Scheme, del.ImageCacheId = "http", r.ImageCacheId
	if _, err := c.DeleteImageCache(del); err != nil {
		t.Fatal(err)
	}
	if got := describeCaches(t, c, func(d *sdkeci.DescribeImageCachesRequest) { d.ImageCacheId = r.ImageCacheId }); len(got) != 0 {
		t.Errorf("deleted cache still described: %+v", got)
	}
	del.ClientToken = "del-1" // a token on a failed call leaves no record
	_, err = c.DeleteImageCache(del)
	if se := serverError(t, err); se.ErrorCode() != "InvalidImageCache.NotFound" {
		t.Errorf("second delete: %s", se.ErrorCode())
	}
	// A retried delete with its ClientToken gets the first answer again.
	del.ImageCacheId, del.ClientToken = other.ImageCacheId, "del-2"
	for i := 0; i < 2; i++ {
		if _, err := c.DeleteImageCache(del); err != nil {
			t.Errorf("delete %d with a ClientToken: %v", i, err)
		}
	}
	del = sdkeci.CreateDeleteImageCacheRequest() // a used request keeps its ClientToken
	del.Scheme, del.ImageCacheId = "http", other.ImageCacheId
	_, err = c.DeleteImageCache(del)
	if se := serverError(t, err); se.ErrorCode() != "InvalidImageCache.NotFound" {
		t.Errorf("delete without the token: %s", se.ErrorCode())
	}
}
