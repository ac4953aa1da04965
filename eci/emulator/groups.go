package emulator

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The container-group actions: create, describe, status, delete, restart,
// and the life a group goes through on its own.

// nextIDLocked makes a resource id: prefix, 8 random characters and the
// emulator's sequence number, which the state keeps across restarts.
func (e *Emulator) nextIDLocked(prefix string) string {
	e.seq++
	return fmt.Sprintf("%s-%s%06d", prefix, randomSuffix(), e.seq)
}

func (e *Emulator) createGroup(p params) (map[string]any, *apiError) {
	for _, k := range []string{"RegionId", "SecurityGroupId", "VSwitchId", "ContainerGroupName"} {
		if p.get(k) == "" {
			return nil, missingParam(k)
		}
	}
	if r := p.get("RegionId"); r != e.cfg.Region {
		return nil, errf(http.StatusBadRequest, "InvalidRegionId.NotFound", "The specified region "+r+" does not exist.")
	}
	name := p.get("ContainerGroupName")
	if len(name) < 2 || !nameRE.MatchString(name) {
		return nil, invalidParam("ContainerGroupName", "2-128 lower-case letters, digits and hyphens, not starting or ending with a hyphen")
	}
	host := p.get("HostName")
	if host != "" && (len(host) > 63 || !hostNameRE.MatchString(host)) {
		return nil, invalidParam("HostName", "at most 63 letters, digits, hyphens and dots, starting and ending with a letter or digit")
	}
	containers, apiErr := parseContainers(p, "Container")
	if apiErr != nil {
		return nil, apiErr
	}
	if len(containers) == 0 {
		return nil, missingParam("Container.1.Name")
	}
	if len(containers) > 20 {
		return nil, invalidParam("Container", "at most 20 containers")
	}
	inits, apiErr := parseContainers(p, "InitContainer")
	if apiErr != nil {
		return nil, apiErr
	}
	vols, apiErr := parseVolumes(p)
	if apiErr != nil {
		return nil, apiErr
	}
	names := map[string]bool{}
	for _, v := range vols {
		names[v.Name] = true
	}
	for _, c := range append(append([]*container{}, containers...), inits...) {
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				return nil, invalidParam("VolumeMount.Name", "container "+c.Name+" mounts undefined volume "+m.Name)
			}
		}
	}
	switch rp := p.get("RestartPolicy"); rp {
	case "", "Always", "OnFailure", "Never":
	default:
		return nil, invalidParam("RestartPolicy", "must be Always, OnFailure or Never")
	}
	cpu, apiErr := p.float("Cpu")
	if apiErr != nil {
		return nil, apiErr
	}
	mem, apiErr := p.float("Memory")
	if apiErr != nil {
		return nil, apiErr
	}
	instanceType := p.get("InstanceType")
	if instanceType != "" {
		var apiErr *apiError
		if instanceType, cpu, mem, apiErr = parseInstanceTypes(instanceType); apiErr != nil {
			return nil, apiErr
		}
	} else {
		if cpu == 0 && mem == 0 {
			for _, c := range containers {
				cpu += c.Cpu
				mem += c.Memory
			}
			if cpu == 0 && mem == 0 {
				cpu, mem = 2, 4
			}
		}
		var ok bool
		if cpu, mem, ok = roundSpec(cpu, mem); !ok {
			return nil, invalidParam("Cpu/Memory", "no ECI specification fits")
		}
	}
	switch s := p.get("SpotStrategy"); s {
	case "", "NoSpot", "SpotAsPriceGo", "SpotWithPriceLimit":
	default:
		return nil, invalidParam("SpotStrategy", s)
	}
	tags, apiErr := parseTags(p)
	if apiErr != nil {
		return nil, apiErr
	}
	creds, apiErr := parseCredentials(p)
	if apiErr != nil {
		return nil, apiErr
	}
	dns, apiErr := parseDNSConfig(p)
	if apiErr != nil {
		return nil, apiErr
	}
	vswitches := strings.Split(p.get("VSwitchId"), ",")
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.nextIDLocked("eci")
	zone := e.cfg.Zones[e.seq%len(e.cfg.Zones)]
	restart := p.get("RestartPolicy")
	if restart == "" {
		restart = "Always"
	}
	g := &group{
		ContainerGroupID: id, ContainerGroupName: name, HostName: host, RegionID: e.cfg.Region, ZoneID: zone, Cpu: cpu, Memory: mem,
		InstanceType: instanceType, VSwitchID: strings.TrimSpace(vswitches[0]), SecurityGroupID: p.get("SecurityGroupId"),
		ResourceGroupID: p.get("ResourceGroupId"), RestartPolicy: restart, Status: "Scheduling", CreationTime: now.Format(timeFormat),
		SpotStrategy: p.get("SpotStrategy"), Tags: tags, Containers: containers, InitContainers: inits, Volumes: vols,
		DNSConfig: dns, clientToken: p.get("ClientToken"), created: now, credentials: creds,
		IntranetIP: fmt.Sprintf("192.168.%d.%d", (e.seq/250)%250, e.seq%250+2),
		Events:     []event{},
	}
	for _, c := range append(append([]*container{}, inits...), containers...) {
		c.CurrentState = state{State: "Waiting", DetailStatus: "ContainerCreating", Reason: "ContainerCreating"}
	}
	e.groups[id] = g
	e.order = append(e.order, id)
	e.addEventLocked(g, "Normal", "Scheduled", "Successfully assigned to "+zone)
	go e.lifecycle(id)
	return map[string]any{"ContainerGroupId": id}, nil
}

func randomSuffix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		b[i] = letters[n.Int64()]
	}
	return string(b)
}

func (e *Emulator) addEventLocked(g *group, typ, reason, msg string) {
	g.Events = addEvent(g.Events, g.ContainerGroupID, typ, reason, msg)
	e.changedLocked(g)
}

// addEvent records an event of owner (a resource id) in evs: a repeat of
// the same reason and message counts up, like Kubernetes events.
func addEvent(evs []event, owner, typ, reason, msg string) []event {
	ts := time.Now().UTC().Format(timeFormat)
	for i := range evs {
		if evs[i].Reason == reason && evs[i].Message == msg {
			evs[i].Count++
			evs[i].LastTimestamp = ts
			return evs
		}
	}
	return append(evs, event{Count: 1, Type: typ, Name: owner + "." + strconv.Itoa(len(evs)+1), Message: msg, Reason: reason, FirstTimestamp: ts, LastTimestamp: ts})
}

// lifecycle moves a new group Scheduling -> Pending -> Running.
func (e *Emulator) lifecycle(id string) {
	if e.step(id, e.cfg.Delays.Scheduling, "Scheduling", "Pending") {
		e.startWhenPending(id)
	}
}

// startWhenPending starts a Pending group's containers after the Pending delay.
func (e *Emulator) startWhenPending(id string) {
	if !e.step(id, e.cfg.Delays.Pending, "Pending", "Pending") {
		return
	}
	e.mu.Lock()
	g, ok := e.groups[id]
	e.mu.Unlock()
	if ok {
		e.runtime.start(g)
	}
}

// step waits d, then moves group id from status from to to; false when the
// group is gone, in another status or the emulator closed meanwhile.
func (e *Emulator) step(id string, d time.Duration, from, to string) bool {
	time.Sleep(d)
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.groups[id]
	if !ok || g.Status != from || e.closed {
		return false
	}
	if from != to {
		g.Status = to
		e.changedLocked(g)
	}
	return true
}

func (e *Emulator) describeGroups(p params) (map[string]any, *apiError) {
	start, limit, apiErr := page(p, 20, 20)
	if apiErr != nil {
		return nil, apiErr
	}
	ids, apiErr := idList(p, "ContainerGroupIds", 20)
	if apiErr != nil {
		return nil, apiErr
	}
	want := tagFilter(p)
	idSet := map[string]bool{}
	for _, id := range ids {
		idSet[id] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var matched []*group
	for _, id := range e.order {
		g := e.groups[id]
		if len(idSet) > 0 && !idSet[id] {
			continue
		}
		if n := p.get("ContainerGroupName"); n != "" && g.ContainerGroupName != n {
			continue
		}
		if s := p.get("Status"); s != "" && g.Status != s {
			continue
		}
		if z := p.get("ZoneId"); z != "" && g.ZoneID != z {
			continue
		}
		if !hasTags(g.Tags, want) {
			continue
		}
		matched = append(matched, g)
	}
	end := min(start+limit, len(matched))
	out := []json.RawMessage{}
	for _, g := range matched[min(start, len(matched)):end] {
		b, _ := json.Marshal(g)
		out = append(out, b)
	}
	return map[string]any{"ContainerGroups": out, "TotalCount": len(matched), "NextToken": nextToken(end, len(matched))}, nil
}

// describeGroupStatus implements DescribeContainerGroupStatus: the groups
// given by ContainerGroupIds (at most 20), or every group, paged (Limit
// default 200), filtered by ZoneId, VSwitchId and Tag.N like
// DescribeContainerGroups. Each entry has the id, name, status and a
// Kubernetes-shaped PodStatus with ECI's key spellings (see podStatus).
// SinceSecond keeps only groups that changed in the last that many
// seconds, for pollers.
func (e *Emulator) describeGroupStatus(p params) (map[string]any, *apiError) {
	start, limit, apiErr := page(p, 200, 200)
	if apiErr != nil {
		return nil, apiErr
	}
	since, apiErr := p.int("SinceSecond", 0)
	if apiErr != nil {
		return nil, apiErr
	}
	if since < 0 {
		return nil, invalidParam("SinceSecond", "must not be negative")
	}
	now := time.Now()
	ids, apiErr := idList(p, "ContainerGroupIds", 20)
	if apiErr != nil {
		return nil, apiErr
	}
	idSet := map[string]bool{}
	for _, id := range ids {
		idSet[id] = true
	}
	want := tagFilter(p)
	e.mu.Lock()
	defer e.mu.Unlock()
	var matched []*group
	for _, id := range e.order {
		g := e.groups[id]
		if (len(idSet) > 0 && !idSet[id]) || !matches(p, "ZoneId", g.ZoneID) || !matches(p, "VSwitchId", g.VSwitchID) || !hasTags(g.Tags, want) {
			continue
		}
		if since > 0 && now.Sub(g.changed) > time.Duration(since)*time.Second {
			continue
		}
		matched = append(matched, g)
	}
	end := min(start+limit, len(matched))
	out := []map[string]any{}
	for _, g := range matched[min(start, len(matched)):end] {
		out = append(out, map[string]any{"ContainerGroupId": g.ContainerGroupID, "Name": g.ContainerGroupName, "Status": g.Status,
			"Annotations": "{}", "PodStatus": podStatus(g)})
	}
	return map[string]any{"Data": out, "TotalCount": len(matched), "NextToken": nextToken(end, len(matched))}, nil
}

// podStatus is a group's PodStatus as DescribeContainerGroupStatus
// answers it: Conditions keys type/status/lastTransitionTime in lower case
// beside Message/Reason, and a running state's start under the key
// StartedAtstartedAt, as in ECI's API definition.
func podStatus(g *group) map[string]any {
	phase := podPhase(g.Status)
	allReady := len(g.Containers) > 0
	statuses := []map[string]any{}
	for _, c := range g.Containers {
		allReady = allReady && c.Ready
		statuses = append(statuses, map[string]any{"Name": c.Name, "Image": c.Image, "ImageID": "", "Ready": c.Ready,
			"Started": c.CurrentState.State == "Running", "RestartCount": c.RestartCount,
			"State": k8sState(c.CurrentState), "LastState": k8sState(c.PreviousState)})
	}
	cond := func(typ string, ok bool) map[string]any {
		st := "False"
		if ok {
			st = "True"
		}
		// The transition time is the group's creation: the emulator does
		// not track conditions, and a stable value keeps the entry
		// unchanged while nothing else changes.
		return map[string]any{"type": typ, "status": st, "lastTransitionTime": g.CreationTime, "Message": "", "Reason": ""}
	}
	running := phase == "Running" || phase == "Succeeded"
	ready := phase == "Running" && allReady
	out := map[string]any{"Phase": phase, "HostIp": g.IntranetIP, "PodIp": g.IntranetIP, "PodIps": []map[string]string{},
		"QosClass": "Guaranteed", "StartTime": g.CreationTime, "ContainerStatuses": statuses,
		"Conditions": []map[string]any{cond("PodScheduled", g.Status != "Scheduling" && g.Status != "ScheduleFailed"),
			cond("Initialized", running), cond("ContainersReady", ready), cond("Ready", ready)}}
	if g.IntranetIP != "" {
		out["PodIps"] = []map[string]string{{"Ip": g.IntranetIP}}
	}
	return out
}

// k8sState is a container state in DescribeContainerGroupStatus' shape.
func k8sState(s state) map[string]any {
	switch s.State {
	case "Running":
		return map[string]any{"Running": map[string]any{"StartedAtstartedAt": s.StartTime}}
	case "Terminated":
		return map[string]any{"Terminated": map[string]any{"ContainerID": "", "ExitCode": s.ExitCode, "FinishedAt": s.FinishTime,
			"Message": s.Message, "Reason": s.Reason, "Signal": s.Signal, "StartedAt": s.StartTime}}
	case "Waiting":
		return map[string]any{"Waiting": map[string]any{"Message": s.Message, "Reason": s.Reason}}
	}
	return map[string]any{}
}

// podPhase is the Kubernetes pod phase of an ECI status.
func podPhase(status string) string {
	switch status {
	case "Running", "Terminating":
		return "Running"
	case "Succeeded":
		return "Succeeded"
	case "Failed", "Expired", "ScheduleFailed":
		return "Failed"
	}
	return "Pending"
}

func (e *Emulator) lookup(p params) (*group, *apiError) {
	id := p.get("ContainerGroupId")
	if id == "" {
		return nil, missingParam("ContainerGroupId")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.groups[id]
	if !ok {
		return nil, notFound(id)
	}
	return g, nil
}

func (e *Emulator) deleteGroup(p params) (map[string]any, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	e.removeLocked(g.ContainerGroupID)
	e.mu.Unlock()
	go e.runtime.stop(g, 10*time.Second)
	return map[string]any{}, nil
}

func (e *Emulator) restartGroup(p params) (map[string]any, *apiError) {
	g, apiErr := e.lookup(p)
	if apiErr != nil {
		return nil, apiErr
	}
	e.mu.Lock()
	status := g.Status
	if status == "Running" {
		g.Status = "Restarting"
		e.addEventLocked(g, "Normal", "Restarting", "Restarting the container group")
	}
	e.mu.Unlock()
	if status != "Running" {
		return nil, errf(http.StatusBadRequest, "IncorrectStatus", "The current status of the container group "+g.ContainerGroupID+" is "+status+"; it can be restarted only when Running.")
	}
	e.runtime.stop(g, 10*time.Second)
	// Every container runs again: one restart more each, and the stopped
	// run's log becomes the previous log.
	e.mu.Lock()
	cs := append([]*container(nil), g.Containers...)
	for _, c := range cs {
		c.RestartCount++
	}
	e.changedLocked(g)
	e.mu.Unlock()
	if pr, ok := e.runtime.(*processRuntime); ok {
		for _, c := range cs {
			_ = os.Rename(pr.logPath(g, c.Name, false), pr.logPath(g, c.Name, true))
		}
	}
	e.runtime.start(g)
	return map[string]any{}, nil
}
