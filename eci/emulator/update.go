package emulator

import (
	"fmt"
	"slices"
	"time"
)

// groupUpdate is an accepted UpdateContainerGroup: the whole configuration
// the group gets once its containers have stopped. It is saved with the
// group, so an update in flight survives an emulator restart.
type groupUpdate struct {
	RestartPolicy  string       `json:"RestartPolicy"`
	Cpu            float64      `json:"Cpu"`
	Memory         float64      `json:"Memory"`
	Containers     []*container `json:"Containers"`
	InitContainers []*container `json:"InitContainers"`
	Volumes        []volume     `json:"Volumes"`
	DNSConfig      *dnsConfig   `json:"DnsConfig,omitempty"`
}

// updateGroup implements UpdateContainerGroup, for groups that are
// Pending or Running, as ECI allows. Containers (and init containers) are
// matched by name and only the fields given change; a list given
// (Command, Arg, EnvironmentVar, Port, VolumeMount) replaces the old one.
// Volumes are matched by name, new names are added. Tags given replace
// all tags and, like registry credentials, take effect at once. Any other
// change makes the group Updating: its containers stop, the new
// configuration applies, and it goes Pending and Running again. UpdateType
// (RenewUpdate or IncrementalUpdate) is checked but both behave as above.
func (e *Emulator) updateGroup(p params) (map[string]any, *apiError) {
	if apiErr := e.checkRegion(p); apiErr != nil {
		return nil, apiErr
	}
	id := p.get("ContainerGroupId")
	if id == "" {
		return nil, missingParam("ContainerGroupId")
	}
	if t := p.get("UpdateType"); t != "" && t != "RenewUpdate" && t != "IncrementalUpdate" {
		return nil, invalidParam("UpdateType", "must be RenewUpdate or IncrementalUpdate")
	}
	req, apiErr := parseUpdate(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.groups[id]
	if !ok {
		return nil, notFound(id)
	}
	if g.Status != "Pending" && g.Status != "Running" {
		return nil, incorrectStatus("container group", id, g.Status, "Pending or Running")
	}
	var upd *groupUpdate
	if req.restarts() {
		if upd, apiErr = req.apply(g); apiErr != nil {
			return nil, apiErr
		}
	}
	if req.tags != nil {
		g.Tags = req.tags
	}
	if req.credentials != nil {
		g.credentials = req.credentials
	}
	if upd != nil {
		g.pending, g.Status = upd, "Updating"
		e.addEventLocked(g, "Normal", "Updating", "Updating the container group")
		go e.applyUpdate(id)
	}
	e.changedLocked(g)
	return map[string]any{}, nil
}

// updateRequest is what an UpdateContainerGroup asks for; nil or zero
// means not given.
type updateRequest struct {
	p              params
	restartPolicy  string
	cpu, memory    *float64
	tags           []tag
	credentials    []registryCredential
	dns            *dnsConfig
	volumes        []volume
	containers     []int // the N of each Container.N
	initContainers []int
}

func parseUpdate(p params) (*updateRequest, *apiError) {
	req := &updateRequest{p: p, restartPolicy: p.get("RestartPolicy"),
		containers: p.indices("Container"), initContainers: p.indices("InitContainer")}
	switch req.restartPolicy {
	case "", "Always", "OnFailure", "Never":
	default:
		return nil, invalidParam("RestartPolicy", "must be Always, OnFailure or Never")
	}
	for _, k := range []string{"Cpu", "Memory"} {
		if p.get(k) == "" {
			continue
		}
		f, apiErr := p.float(k)
		if apiErr != nil {
			return nil, apiErr
		}
		if k == "Cpu" {
			req.cpu = &f
		} else {
			req.memory = &f
		}
	}
	var apiErr *apiError
	if len(p.indices("Tag")) > 0 {
		if req.tags, apiErr = parseTags(p); apiErr != nil {
			return nil, apiErr
		}
	}
	if req.credentials, apiErr = parseCredentials(p); apiErr != nil {
		return nil, apiErr
	}
	if req.dns, apiErr = parseDNSConfig(p); apiErr != nil {
		return nil, apiErr
	}
	if req.volumes, apiErr = parseVolumes(p); apiErr != nil {
		return nil, apiErr
	}
	for i, v := range req.volumes {
		switch v.Type {
		case "NFSVolume", "ConfigFileVolume", "EmptyDirVolume":
		default:
			return nil, invalidParam(fmt.Sprintf("Volume.%d.Type", i+1), "an update takes NFSVolume, ConfigFileVolume or EmptyDirVolume")
		}
	}
	return req, nil
}

// restarts: the request changes more than tags and credentials.
func (r *updateRequest) restarts() bool {
	return r.restartPolicy != "" || r.cpu != nil || r.memory != nil || r.dns != nil ||
		len(r.volumes) > 0 || len(r.containers) > 0 || len(r.initContainers) > 0
}

// apply computes g's configuration after the update (Emulator.mu held).
// The group's own containers are not touched: the runtime may still be
// reading them.
func (r *updateRequest) apply(g *group) (*groupUpdate, *apiError) {
	upd := &groupUpdate{RestartPolicy: g.RestartPolicy, Cpu: g.Cpu, Memory: g.Memory, DNSConfig: g.DNSConfig,
		Volumes: slices.Clone(g.Volumes), Containers: copyContainers(g.Containers), InitContainers: copyContainers(g.InitContainers)}
	if r.restartPolicy != "" {
		upd.RestartPolicy = r.restartPolicy
	}
	if r.dns != nil {
		upd.DNSConfig = r.dns
	}
	for _, v := range r.volumes {
		if i := slices.IndexFunc(upd.Volumes, func(o volume) bool { return o.Name == v.Name }); i >= 0 {
			upd.Volumes[i] = v
		} else {
			upd.Volumes = append(upd.Volumes, v)
		}
	}
	if apiErr := patchContainers(r.p, "Container", r.containers, upd.Containers); apiErr != nil {
		return nil, apiErr
	}
	if apiErr := patchContainers(r.p, "InitContainer", r.initContainers, upd.InitContainers); apiErr != nil {
		return nil, apiErr
	}
	if apiErr := r.resize(g, upd); apiErr != nil {
		return nil, apiErr
	}
	return upd, checkMounts(upd)
}

// resize applies Cpu and Memory, rounded up to a sold specification as at
// creation (groups made from an InstanceType keep their size).
func (r *updateRequest) resize(g *group, upd *groupUpdate) *apiError {
	if r.cpu == nil && r.memory == nil {
		return nil
	}
	cpu, mem := upd.Cpu, upd.Memory
	if r.cpu != nil {
		cpu = *r.cpu
	}
	if r.memory != nil {
		mem = *r.memory
	}
	if g.InstanceType != "" {
		return invalidParam("Cpu/Memory", "the instance was created with InstanceType "+g.InstanceType)
	}
	var ok bool
	if upd.Cpu, upd.Memory, ok = roundSpec(cpu, mem); !ok {
		return invalidParam("Cpu/Memory", "no ECI specification fits")
	}
	return nil
}

// checkMounts: every mount names a volume of the updated group.
func checkMounts(upd *groupUpdate) *apiError {
	names := map[string]bool{}
	for _, v := range upd.Volumes {
		names[v.Name] = true
	}
	for _, c := range append(append([]*container{}, upd.Containers...), upd.InitContainers...) {
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				return invalidParam("VolumeMount.Name", "container "+c.Name+" mounts undefined volume "+m.Name)
			}
		}
	}
	return nil
}

// patchContainers applies prefix.N.* (N in ns) to the containers of the
// same names in cs.
func patchContainers(p params, prefix string, ns []int, cs []*container) *apiError {
	for _, n := range ns {
		pre := fmt.Sprintf("%s.%d.", prefix, n)
		name := p.get(pre + "Name")
		if name == "" {
			return missingParam(pre + "Name")
		}
		i := slices.IndexFunc(cs, func(c *container) bool { return c.Name == name })
		if i < 0 {
			return invalidParam(pre+"Name", "the group has no container "+name)
		}
		if apiErr := patchContainer(p, pre, cs[i]); apiErr != nil {
			return apiErr
		}
	}
	return nil
}

// patchContainer changes the fields of c given under pre. Probe and
// capability lists arrive as the SDK's literal "<[]string Value>" and are
// ignored, as at creation.
func patchContainer(p params, pre string, c *container) *apiError {
	given := func(k string) bool { _, ok := p[pre+k]; return ok }
	if given("Image") {
		c.Image = p.get(pre + "Image")
	}
	if given("WorkingDir") {
		c.WorkingDir = p.get(pre + "WorkingDir")
	}
	if given("ImagePullPolicy") {
		c.ImagePullPolicy = p.get(pre + "ImagePullPolicy")
	}
	var apiErr *apiError
	if given("Cpu") {
		if c.Cpu, apiErr = p.float(pre + "Cpu"); apiErr != nil {
			return apiErr
		}
	}
	if given("Memory") {
		if c.Memory, apiErr = p.float(pre + "Memory"); apiErr != nil {
			return apiErr
		}
	}
	if given("Tty") {
		if c.Tty, apiErr = p.bool(pre + "Tty"); apiErr != nil {
			return apiErr
		}
	}
	if given("Stdin") {
		if c.Stdin, apiErr = p.bool(pre + "Stdin"); apiErr != nil {
			return apiErr
		}
	}
	if c.Image == "" {
		return invalidParam(pre+"Image", "must not be empty")
	}
	lists := func(k string) bool { return len(p.indices(pre+k)) > 0 }
	if lists("Command") {
		c.Commands = p.list(pre + "Command")
	}
	if lists("Arg") {
		c.Args = p.list(pre + "Arg")
	}
	if lists("EnvironmentVar") {
		if c.EnvironmentVars, apiErr = parseEnv(p, pre+"EnvironmentVar"); apiErr != nil {
			return apiErr
		}
	}
	if lists("Port") {
		if c.Ports, apiErr = parsePorts(p, pre+"Port"); apiErr != nil {
			return apiErr
		}
	}
	if lists("VolumeMount") {
		if c.VolumeMounts, apiErr = parseMounts(p, pre+"VolumeMount"); apiErr != nil {
			return apiErr
		}
	}
	return nil
}

// copyContainers copies containers deeply enough to change their
// configuration without touching the originals.
func copyContainers(cs []*container) []*container {
	out := make([]*container, len(cs))
	for i, c := range cs {
		cp := *c
		cp.Commands, cp.Args = slices.Clone(c.Commands), slices.Clone(c.Args)
		cp.EnvironmentVars, cp.Ports, cp.VolumeMounts = slices.Clone(c.EnvironmentVars), slices.Clone(c.Ports), slices.Clone(c.VolumeMounts)
		out[i] = &cp
	}
	return out
}

// applyUpdate finishes an update: it stops the group's containers, swaps
// in the new configuration (each container keeping its restart count and
// states, the stopped run becoming the previous state when it starts
// again), and starts the group again through Pending.
func (e *Emulator) applyUpdate(id string) {
	e.mu.Lock()
	g, ok := e.groups[id]
	e.mu.Unlock()
	if !ok {
		return
	}
	e.runtime.stop(g, 10*time.Second)
	time.Sleep(e.cfg.Delays.Scheduling)
	e.mu.Lock()
	if g, ok = e.groups[id]; !ok || g.Status != "Updating" || g.pending == nil || e.closed {
		e.mu.Unlock()
		return
	}
	upd := g.pending
	carryState(g.Containers, upd.Containers)
	carryState(g.InitContainers, upd.InitContainers)
	g.RestartPolicy, g.Cpu, g.Memory, g.DNSConfig = upd.RestartPolicy, upd.Cpu, upd.Memory, upd.DNSConfig
	g.Containers, g.InitContainers, g.Volumes = upd.Containers, upd.InitContainers, upd.Volumes
	g.pending, g.Status = nil, "Pending"
	e.addEventLocked(g, "Normal", "Updated", "Updated the container group")
	e.mu.Unlock()
	e.startWhenPending(id)
}

// carryState copies each old container's run state to the new one of the
// same name.
func carryState(old, updated []*container) {
	for _, n := range updated {
		for _, o := range old {
			if o.Name == n.Name {
				n.RestartCount, n.CurrentState, n.PreviousState, n.Ready = o.RestartCount, o.CurrentState, o.PreviousState, o.Ready
			}
		}
	}
}
