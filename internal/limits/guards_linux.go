package limits

// The backends and the groups they create, checked at compile time.
var (
	_ backend = (*cgroup1)(nil)
	_ backend = (*cgroup2)(nil)
	_ backend = rlimitBackend{}
	_ Group   = (*group1)(nil)
	_ Group   = (*group2)(nil)
	_ Group   = (*rlimitGroup)(nil)
)
