package model

import "time"

// What the kubelet API asks of ECI: a page of a container's log, and an
// instance's metrics.

// LogRequest is one DescribeContainerLog call.
type LogRequest struct {
	InstanceID string
	Container  string
	Tail       int       // 0: no tail
	Since      time.Time // zero: from the start
	LimitBytes int       // 0: ECI's default
	Previous   bool      // the previous instance of the container (LastTime)
}

// Usage is CPU and memory at one time.
type Usage struct {
	CPUUsageNanoCores       uint64
	CPUUsageCoreNanoSeconds uint64
	MemoryWorkingSetBytes   uint64
	MemoryUsageBytes        uint64
	MemoryRSSBytes          uint64
	MemoryAvailableBytes    uint64
}

// InstanceSample is one ECI instance's latest metrics.
type InstanceSample struct {
	Time time.Time
	Usage
	RxBytes, TxBytes, RxErrors, TxErrors uint64
	Containers                           map[string]Usage
}
