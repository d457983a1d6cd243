package analyze

import (
	"strings"
	"unicode"

	"github.com/cilium/ebpf/asm"
)

// HelperName spells a helper the way the kernel's UAPI does:
// asm.FnProbeReadKernel is "bpf_probe_read_kernel". A helper this version of
// cilium/ebpf does not know is "bpf_helper_N" with its number.
func HelperName(fn asm.BuiltinFunc) string {
	s := fn.String()
	if !strings.HasPrefix(s, "Fn") {
		return "bpf_helper_" + strings.TrimSuffix(strings.TrimPrefix(s, "BuiltinFunc("), ")")
	}
	s = s[2:]
	var b strings.Builder
	b.WriteString("bpf_")
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			if i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1])) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// lastKnownHelper is the newest helper the tables below classify; calls of
// newer helpers are treated as able to do anything with their arguments.
const lastKnownHelper = asm.FnCgrpStorageDelete

// packetWriters change packet bytes.
var packetWriters = map[asm.BuiltinFunc]bool{
	asm.FnSkbStoreBytes:     true,
	asm.FnL3CsumReplace:     true,
	asm.FnL4CsumReplace:     true,
	asm.FnSkbVlanPush:       true,
	asm.FnSkbVlanPop:        true,
	asm.FnSkbChangeProto:    true,
	asm.FnXdpStoreBytes:     true,
	asm.FnLwtPushEncap:      true,
	asm.FnLwtSeg6StoreBytes: true,
	asm.FnLwtSeg6AdjustSrh:  true,
	asm.FnLwtSeg6Action:     true,
	asm.FnSkbEcnSetCe:       true,
	asm.FnMsgPushData:       true,
	asm.FnMsgPopData:        true,
	asm.FnStoreHdrOpt:       true,
	// The dynptr may be an skb or xdp dynptr (bpf_dynptr_from_skb/xdp).
	asm.FnDynptrWrite: true,
}

// packetAdjusters move the packet's head, tail or metadata boundary, or
// change its size or layout.
var packetAdjusters = map[asm.BuiltinFunc]bool{
	asm.FnXdpAdjustHead:  true,
	asm.FnXdpAdjustTail:  true,
	asm.FnXdpAdjustMeta:  true,
	asm.FnSkbChangeTail:  true,
	asm.FnSkbChangeHead:  true,
	asm.FnSkbAdjustRoom:  true,
	asm.FnSkbChangeType:  true,
	asm.FnSkbPullData:    true,
	asm.FnMsgPullData:    true,
	asm.FnReserveHdrOpt:  true,
	asm.FnSkbChangeProto: true,
}

// redirectors send the packet somewhere else than the stack.
var redirectors = map[asm.BuiltinFunc]bool{
	asm.FnRedirect:        true,
	asm.FnRedirectMap:     true,
	asm.FnRedirectNeigh:   true,
	asm.FnRedirectPeer:    true,
	asm.FnCloneRedirect:   true,
	asm.FnSkRedirectMap:   true,
	asm.FnSkRedirectHash:  true,
	asm.FnMsgRedirectMap:  true,
	asm.FnMsgRedirectHash: true,
}

// memoryWriters are the helpers that write through a pointer argument, by
// argument register. A packet pointer in such a register means the helper
// may write the packet.
var memoryWriters = map[asm.BuiltinFunc][]asm.Register{
	asm.FnProbeRead:             {asm.R1},
	asm.FnProbeReadStr:          {asm.R1},
	asm.FnProbeReadUser:         {asm.R1},
	asm.FnProbeReadKernel:       {asm.R1},
	asm.FnProbeReadUserStr:      {asm.R1},
	asm.FnProbeReadKernelStr:    {asm.R1},
	asm.FnCopyFromUser:          {asm.R1},
	asm.FnCopyFromUserTask:      {asm.R1},
	asm.FnGetCurrentComm:        {asm.R1},
	asm.FnSkbLoadBytes:          {asm.R3},
	asm.FnSkbLoadBytesRelative:  {asm.R3},
	asm.FnXdpLoadBytes:          {asm.R3},
	asm.FnGetStack:              {asm.R2},
	asm.FnGetTaskStack:          {asm.R2},
	asm.FnFibLookup:             {asm.R2},
	asm.FnSkbGetTunnelKey:       {asm.R2},
	asm.FnSkbGetTunnelOpt:       {asm.R2},
	asm.FnSkbGetXfrmState:       {asm.R3},
	asm.FnStrtol:                {asm.R4},
	asm.FnStrtoul:               {asm.R4},
	asm.FnSnprintf:              {asm.R1},
	asm.FnSnprintfBtf:           {asm.R1},
	asm.FnDPath:                 {asm.R2},
	asm.FnMapPopElem:            {asm.R2},
	asm.FnMapPeekElem:           {asm.R2},
	asm.FnDynptrRead:            {asm.R1},
	asm.FnDynptrFromMem:         {asm.R1, asm.R4},
	asm.FnCheckMtu:              {asm.R3},
	asm.FnSysctlGetName:         {asm.R2},
	asm.FnSysctlGetCurrentValue: {asm.R2},
	asm.FnSysctlGetNewValue:     {asm.R2},
	asm.FnGetsockopt:            {asm.R4},
	asm.FnGetBranchSnapshot:     {asm.R1},
	asm.FnReadBranchRecords:     {asm.R2},
	asm.FnGetFuncArg:            {asm.R3},
	asm.FnGetFuncRet:            {asm.R2},
	asm.FnGetNsCurrentPidTgid:   {asm.R3},
	asm.FnPerfEventReadValue:    {asm.R3},
	asm.FnPerfProgReadValue:     {asm.R2},
	asm.FnImaInodeHash:          {asm.R2},
	asm.FnImaFileHash:           {asm.R2},
	asm.FnLoadHdrOpt:            {asm.R2},
	asm.FnRingbufReserveDynptr:  {asm.R4},
	asm.FnKptrXchg:              {asm.R1},
	// Callbacks may write their context, which is the caller's stack.
	asm.FnLoop:             {asm.R3},
	asm.FnForEachMapElem:   {asm.R3},
	asm.FnUserRingbufDrain: {asm.R3},
	asm.FnFindVma:          {asm.R4},
}

// metadataWriters change packet metadata outside the packet bytes.
var metadataWriters = map[asm.BuiltinFunc]bool{
	asm.FnSkbSetTunnelKey: true,
	asm.FnSkbSetTunnelOpt: true,
	asm.FnSetHash:         true,
	asm.FnSetHashInvalid:  true,
	asm.FnGetHashRecalc:   true,
	asm.FnCsumUpdate:      true,
	asm.FnCsumLevel:       true,
	asm.FnSkbSetTstamp:    true,
	asm.FnSkAssign:        true,
}

// memoryReturners return a pointer to map values or other memory that is
// never the packet (or NULL).
var memoryReturners = map[asm.BuiltinFunc]bool{
	asm.FnMapLookupElem:       true,
	asm.FnMapLookupPercpuElem: true,
	asm.FnSkStorageGet:        true,
	asm.FnTaskStorageGet:      true,
	asm.FnInodeStorageGet:     true,
	asm.FnCgrpStorageGet:      true,
	asm.FnGetLocalStorage:     true,
	asm.FnRingbufReserve:      true,
	asm.FnPerCpuPtr:           true,
	asm.FnThisCpuPtr:          true,
}

// pointerReturners return pointers that may alias anything kfm does not
// track (bpf_dynptr_data on an skb or xdp dynptr points into the packet).
var pointerReturners = map[asm.BuiltinFunc]bool{
	asm.FnDynptrData:           true,
	asm.FnKptrXchg:             true,
	asm.FnSkLookupTcp:          true,
	asm.FnSkLookupUdp:          true,
	asm.FnSkcLookupTcp:         true,
	asm.FnSkFullsock:           true,
	asm.FnTcpSock:              true,
	asm.FnGetListenerSock:      true,
	asm.FnSkcToTcp6Sock:        true,
	asm.FnSkcToTcpSock:         true,
	asm.FnSkcToTcpTimewaitSock: true,
	asm.FnSkcToTcpRequestSock:  true,
	asm.FnSkcToUdp6Sock:        true,
	asm.FnSkcToUnixSock:        true,
	asm.FnSkcToMptcpSock:       true,
	asm.FnGetCurrentTaskBtf:    true,
	asm.FnSockFromFile:         true,
	asm.FnTaskPtRegs:           true,
	asm.FnFindVma:              true,
}
