package model

// Quotas are ECI's published API rate limits, in calls per minute per
// action and account (https://www.alibabacloud.com/help/en/elastic-container-instance/latest/limits).
// DescribeContainerGroupStatus is not in the published table; it is given
// DescribeContainerGroups' figure, the describe quota it is the cheap form
// of. Actions not listed have no published quota and none is assumed.
var Quotas = map[string]int{
	"DescribeContainerGroups":           2000,
	"DescribeContainerGroupStatus":      2000, // assumed: not published
	"DescribeContainerGroupMetric":      2000,
	"CreateContainerGroup":              1000,
	"DeleteContainerGroup":              1000,
	"ExecContainerCommand":              500,
	"DescribeContainerLog":              500,
	"RestartContainerGroup":             500,
	"UpdateContainerGroup":              500,
	"DescribeMultiContainerGroupMetric": 500,
	"CreateImageCache":                  200,
}

// QuotaBurst is how many calls a quota of perMinute lets through at once
// after a quiet spell: ECI publishes no burst, so one second's worth (at
// least one) is assumed.
func QuotaBurst(perMinute int) int { return max(1, perMinute/60) }
