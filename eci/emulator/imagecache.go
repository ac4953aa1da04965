package emulator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// imageCacheInfo is an image cache as DescribeImageCaches returns it.
type imageCacheInfo struct {
	ImageCacheID        string   `json:"ImageCacheId"`
	ImageCacheName      string   `json:"ImageCacheName"`
	ContainerGroupID    string   `json:"ContainerGroupId"` // the instance that built it
	SnapshotID          string   `json:"SnapshotId"`
	Progress            string   `json:"Progress"`
	Status              string   `json:"Status"`
	ExpireDateTime      string   `json:"ExpireDateTime"`
	CreationTime        string   `json:"CreationTime"`
	Events              []event  `json:"Events"`
	Images              []string `json:"Images"`
	Tags                []tag    `json:"Tags"`
	RegionID            string   `json:"RegionId"`
	ResourceGroupID     string   `json:"ResourceGroupId"`
	ImageCacheSize      int      `json:"ImageCacheSize"`
	EliminationStrategy string   `json:"EliminationStrategy"`
}

// imageCache is an image cache as saved: what DescribeImageCaches shows
// and the settings it does not.
type imageCache struct {
	imageCacheInfo
	Config imageCacheConfig `json:"Config"`
}

type imageCacheConfig struct {
	SecurityGroupID string               `json:"SecurityGroupId,omitempty"`
	VSwitchID       string               `json:"VSwitchId,omitempty"`
	ZoneID          string               `json:"ZoneId,omitempty"`
	EipInstanceID   string               `json:"EipInstanceId,omitempty"`
	RetentionDays   int                  `json:"RetentionDays,omitempty"`
	Credentials     []registryCredential `json:"Credentials,omitempty"`
}

// createImageCache implements CreateImageCache: ImageCacheName and at
// least one Image.N are required. The cache goes Preparing, Creating
// (half of Delays.ImageCache each) and Ready, with a snapshot id. ECI
// builds it on an ECI instance, whose id the answer carries; the emulator
// does not list that instance among the container groups.
func (e *Emulator) createImageCache(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	name := p.get("ImageCacheName")
	if name == "" {
		return nil, missingParam("ImageCacheName")
	}
	if !nameRE.MatchString(name) || len(name) < 2 {
		return nil, invalidParam("ImageCacheName", "2-128 lower-case letters, digits and hyphens, not starting or ending with a hyphen")
	}
	images, apiErr := parseImages(p)
	if apiErr != nil {
		return nil, apiErr
	}
	if len(images) == 0 {
		return nil, missingParam("Image.1")
	}
	settings, apiErr := parseCacheSettings(p, 20)
	if apiErr != nil {
		return nil, apiErr
	}
	tags, apiErr := parseTags(p)
	if apiErr != nil {
		return nil, apiErr
	}
	creds, apiErr := parseCredentials(p)
	if apiErr != nil {
		return nil, apiErr
	}
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.nextIDLocked("imc")
	c := &imageCache{imageCacheInfo: imageCacheInfo{
		ImageCacheID: id, ImageCacheName: name, ContainerGroupID: e.nextIDLocked("eci"), Progress: "0%", Status: "Preparing",
		CreationTime: now.Format(timeFormat), Events: []event{}, Images: images, Tags: tags, RegionID: e.cfg.Region,
		ResourceGroupID: p.get("ResourceGroupId"), ImageCacheSize: settings.size, EliminationStrategy: settings.elimination,
	}, Config: imageCacheConfig{SecurityGroupID: p.get("SecurityGroupId"), VSwitchID: p.get("VSwitchId"), ZoneID: p.get("ZoneId"),
		EipInstanceID: p.get("EipInstanceId"), RetentionDays: settings.retentionDays, Credentials: creds}}
	c.setExpiry()
	c.Events = addEvent(c.Events, id, "Normal", "Preparing", "Preparing the instance that builds the image cache")
	e.caches[id] = c
	e.imcOrder = append(e.imcOrder, id)
	e.persist.otherChangedLocked()
	go e.buildImageCache(id)
	return map[string]any{"ImageCacheId": id, "ContainerGroupId": c.ContainerGroupID}, nil
}

// parseImages reads Image.N: image references without blanks.
func parseImages(p params) ([]string, *apiError) {
	images := p.list("Image")
	for i, img := range images {
		if img == "" || strings.ContainsAny(img, " \t\n") {
			return nil, invalidParam(fmt.Sprintf("Image.%d", i+1), "not an image reference")
		}
	}
	return images, nil
}

type cacheSettings struct {
	size, retentionDays int
	elimination         string
}

// parseCacheSettings reads ImageCacheSize (GiB, default def),
// RetentionDays and EliminationStrategy ("" or LRU).
func parseCacheSettings(p params, def int) (cacheSettings, *apiError) {
	var s cacheSettings
	var apiErr *apiError
	if s.size, apiErr = p.int("ImageCacheSize", def); apiErr != nil {
		return s, apiErr
	}
	if s.size < 1 {
		return s, invalidParam("ImageCacheSize", "must be a positive number of GiB")
	}
	if s.retentionDays, apiErr = p.int("RetentionDays", 0); apiErr != nil {
		return s, apiErr
	}
	if s.retentionDays < 0 {
		return s, invalidParam("RetentionDays", "must be a positive number of days")
	}
	s.elimination = p.get("EliminationStrategy")
	if s.elimination != "" && s.elimination != "LRU" {
		return s, invalidParam("EliminationStrategy", "must be LRU or empty")
	}
	return s, nil
}

// setExpiry sets ExpireDateTime from RetentionDays; none: never expires.
func (c *imageCache) setExpiry() {
	c.ExpireDateTime = ""
	if c.Config.RetentionDays > 0 {
		created, err := time.Parse(timeFormat, c.CreationTime)
		if err == nil {
			c.ExpireDateTime = created.AddDate(0, 0, c.Config.RetentionDays).Format(timeFormat)
		}
	}
}

// expired: the retention period is over.
func (c *imageCache) expired(now time.Time) bool {
	t, err := time.Parse(timeFormat, c.ExpireDateTime)
	return err == nil && now.After(t)
}

// buildImageCache moves a cache a phase on every half of
// Delays.ImageCache: Preparing -> Creating -> Ready, or Updating -> Ready.
func (e *Emulator) buildImageCache(id string) {
	for {
		time.Sleep(e.cfg.Delays.ImageCache / 2)
		if !e.advanceImageCache(id) {
			return
		}
	}
}

// advanceImageCache does one phase; false when there is no next one.
func (e *Emulator) advanceImageCache(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.caches[id]
	if !ok || e.closed {
		return false
	}
	defer e.persist.otherChangedLocked()
	switch c.Status {
	case "Preparing":
		c.Status, c.Progress = "Creating", "50%"
		c.Events = addEvent(c.Events, id, "Normal", "Pulling", "Pulling "+strings.Join(c.Images, ", "))
		return true
	case "Creating", "Updating":
		c.Status, c.Progress = "Ready", "100%"
		c.SnapshotID = "s-" + randomSuffix() + randomSuffix()[:4]
		c.Events = addEvent(c.Events, id, "Normal", "Succeeded", "The image cache is ready")
	}
	return false
}

// describeImageCaches implements DescribeImageCaches. Filters: ImageCacheId
// (comma-separated), ImageCacheName, SnapshotId, Image (a cache holding
// it), Tag.N, ResourceGroupId, and MatchImage.N, which keeps the Ready
// caches holding all (ImageFullMatch=true) or any of those images, at most
// ImageMatchCountRequest of them. Pages of Limit (default and at most 100;
// the old SDK sends no Limit). Expired caches are deleted first.
func (e *Emulator) describeImageCaches(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	start, limit, apiErr := page(p, 100, 100)
	if apiErr != nil {
		return nil, apiErr
	}
	full, apiErr := p.bool("ImageFullMatch")
	if apiErr != nil {
		return nil, apiErr
	}
	matchCount, apiErr := p.int("ImageMatchCountRequest", 0)
	if apiErr != nil {
		return nil, apiErr
	}
	var ids []string
	if s := p.get("ImageCacheId"); s != "" {
		ids = strings.Split(s, ",")
	}
	match, want := p.list("MatchImage"), tagFilter(p)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneImageCachesLocked(time.Now())
	var matched []*imageCache
	for _, id := range e.imcOrder {
		c := e.caches[id]
		if (len(ids) > 0 && !slices.Contains(ids, id)) || !matches(p, "ImageCacheName", c.ImageCacheName) ||
			!matches(p, "SnapshotId", c.SnapshotID) || !matches(p, "ResourceGroupId", c.ResourceGroupID) ||
			(p.get("Image") != "" && !slices.Contains(c.Images, p.get("Image"))) || !hasTags(c.Tags, want) ||
			(len(match) > 0 && !c.matchesImages(match, full)) {
			continue
		}
		matched = append(matched, c)
	}
	if matchCount > 0 && len(match) > 0 && len(matched) > matchCount {
		matched = matched[:matchCount]
	}
	end := min(start+limit, len(matched))
	out := []json.RawMessage{}
	for _, c := range matched[min(start, len(matched)):end] {
		b, err := json.Marshal(c.imageCacheInfo)
		if err != nil {
			return nil, errf(0, "InternalError", "encoding image cache "+c.ImageCacheID+": "+err.Error())
		}
		out = append(out, b)
	}
	return map[string]any{"ImageCaches": out, "TotalCount": len(matched), "NextToken": nextToken(end, len(matched))}, nil
}

// matchesImages: c is Ready and holds all (full) or any of images.
func (c *imageCache) matchesImages(images []string, full bool) bool {
	if c.Status != "Ready" {
		return false
	}
	n := 0
	for _, img := range images {
		if slices.Contains(c.Images, img) {
			n++
		}
	}
	if full {
		return n == len(images)
	}
	return n > 0
}

func (e *Emulator) pruneImageCachesLocked(now time.Time) {
	for _, id := range slices.Clone(e.imcOrder) {
		if e.caches[id].expired(now) {
			delete(e.caches, id)
			e.imcOrder = removeID(e.imcOrder, id)
			e.persist.otherChangedLocked()
		}
	}
}

// updateImageCache implements UpdateImageCache (current API only; a
// CommonRequest). New Image.N rebuild the cache (Updating, then Ready with
// a new snapshot); name, size, retention, elimination, tags (given tags
// replace all) and network settings change at once. A cache still being
// built cannot be updated.
func (e *Emulator) updateImageCache(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	id := p.get("ImageCacheId")
	if id == "" {
		return nil, missingParam("ImageCacheId")
	}
	name := p.get("ImageCacheName")
	if name != "" && (!nameRE.MatchString(name) || len(name) < 2) {
		return nil, invalidParam("ImageCacheName", "2-128 lower-case letters, digits and hyphens, not starting or ending with a hyphen")
	}
	images, apiErr := parseImages(p)
	if apiErr != nil {
		return nil, apiErr
	}
	var tags []tag
	if len(p.indices("Tag")) > 0 {
		if tags, apiErr = parseTags(p); apiErr != nil {
			return nil, apiErr
		}
	}
	creds, apiErr := parseCredentials(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.caches[id]
	if !ok {
		return nil, imageCacheNotFound(id)
	}
	switch c.Status {
	case "Preparing", "Creating", "Updating":
		return nil, incorrectStatus("image cache", id, c.Status, "Ready, Failed or UpdateFailed")
	}
	settings, apiErr := parseCacheSettings(p, c.ImageCacheSize)
	if apiErr != nil {
		return nil, apiErr
	}
	c.applySettings(p, name, settings, tags, creds)
	if len(images) > 0 {
		c.Images, c.Status, c.Progress = images, "Updating", "0%"
		c.Events = addEvent(c.Events, id, "Normal", "Updating", "Rebuilding the image cache with "+strings.Join(images, ", "))
		go e.buildImageCache(id)
	}
	e.persist.otherChangedLocked()
	return map[string]any{}, nil
}

// applySettings changes what UpdateImageCache gives besides images.
func (c *imageCache) applySettings(p params, name string, s cacheSettings, tags []tag, creds []registryCredential) {
	if name != "" {
		c.ImageCacheName = name
	}
	c.ImageCacheSize = s.size
	if p.get("RetentionDays") != "" {
		c.Config.RetentionDays = s.retentionDays
		c.setExpiry()
	}
	if p.get("EliminationStrategy") != "" {
		c.EliminationStrategy = s.elimination
	}
	if tags != nil {
		c.Tags = tags
	}
	if creds != nil {
		c.Config.Credentials = creds
	}
	for k, dst := range map[string]*string{"SecurityGroupId": &c.Config.SecurityGroupID, "VSwitchId": &c.Config.VSwitchID,
		"EipInstanceId": &c.Config.EipInstanceID, "ResourceGroupId": &c.ResourceGroupID} {
		if v := p.get(k); v != "" {
			*dst = v
		}
	}
}

// deleteImageCache implements DeleteImageCache.
func (e *Emulator) deleteImageCache(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	id := p.get("ImageCacheId")
	if id == "" {
		return nil, missingParam("ImageCacheId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.caches[id]; !ok {
		return nil, imageCacheNotFound(id)
	}
	delete(e.caches, id)
	e.imcOrder = removeID(e.imcOrder, id)
	e.persist.otherChangedLocked()
	return map[string]any{}, nil
}
