/* loadcfg.c - a load configuration directory for the freestanding PE DLLs.
 *
 * lld-link fills the LOAD_CONFIG data directory when an object defines
 * `_load_config_used`.  The layout is IMAGE_LOAD_CONFIG_DIRECTORY64 as of the
 * Windows 11 SDK (0x140 bytes); all fields we do not need are zero.
 * HotPatchTableOffset (offset 0xF0) is 0: a baseline image has no hot patch
 * table; Hotforge's emitter writes one into patch images. */
typedef unsigned long long hf_u64;
typedef unsigned int hf_u32;
typedef unsigned short hf_u16;

struct hf_load_config64 {
    hf_u32 Size;                                   /* 0x000 */
    hf_u32 TimeDateStamp;                          /* 0x004 */
    hf_u16 MajorVersion, MinorVersion;             /* 0x008 */
    hf_u32 GlobalFlagsClear;                       /* 0x00C */
    hf_u32 GlobalFlagsSet;                         /* 0x010 */
    hf_u32 CriticalSectionDefaultTimeout;          /* 0x014 */
    hf_u64 DeCommitFreeBlockThreshold;             /* 0x018 */
    hf_u64 DeCommitTotalFreeThreshold;             /* 0x020 */
    hf_u64 LockPrefixTable;                        /* 0x028 */
    hf_u64 MaximumAllocationSize;                  /* 0x030 */
    hf_u64 VirtualMemoryThreshold;                 /* 0x038 */
    hf_u64 ProcessAffinityMask;                    /* 0x040 */
    hf_u32 ProcessHeapFlags;                       /* 0x048 */
    hf_u16 CSDVersion;                             /* 0x04C */
    hf_u16 DependentLoadFlags;                     /* 0x04E */
    hf_u64 EditList;                               /* 0x050 */
    void *SecurityCookie;                          /* 0x058 */
    hf_u64 SEHandlerTable;                         /* 0x060 */
    hf_u64 SEHandlerCount;                         /* 0x068 */
    hf_u64 GuardCFCheckFunctionPointer;            /* 0x070 */
    hf_u64 GuardCFDispatchFunctionPointer;         /* 0x078 */
    hf_u64 GuardCFFunctionTable;                   /* 0x080 */
    hf_u64 GuardCFFunctionCount;                   /* 0x088 */
    hf_u32 GuardFlags;                             /* 0x090 */
    hf_u16 CodeIntegrityFlags;                     /* 0x094 */
    hf_u16 CodeIntegrityCatalog;                   /* 0x096 */
    hf_u32 CodeIntegrityCatalogOffset;             /* 0x098 */
    hf_u32 CodeIntegrityReserved;                  /* 0x09C */
    hf_u64 GuardAddressTakenIatEntryTable;         /* 0x0A0 */
    hf_u64 GuardAddressTakenIatEntryCount;         /* 0x0A8 */
    hf_u64 GuardLongJumpTargetTable;               /* 0x0B0 */
    hf_u64 GuardLongJumpTargetCount;               /* 0x0B8 */
    hf_u64 DynamicValueRelocTable;                 /* 0x0C0 */
    hf_u64 CHPEMetadataPointer;                    /* 0x0C8 */
    hf_u64 GuardRFFailureRoutine;                  /* 0x0D0 */
    hf_u64 GuardRFFailureRoutineFunctionPointer;   /* 0x0D8 */
    hf_u32 DynamicValueRelocTableOffset;           /* 0x0E0 */
    hf_u16 DynamicValueRelocTableSection;          /* 0x0E4 */
    hf_u16 Reserved2;                              /* 0x0E6 */
    hf_u64 GuardRFVerifyStackPointerFunctionPointer; /* 0x0E8 */
    hf_u32 HotPatchTableOffset;                    /* 0x0F0 */
    hf_u32 Reserved3;                              /* 0x0F4 */
    hf_u64 EnclaveConfigurationPointer;            /* 0x0F8 */
    hf_u64 VolatileMetadataPointer;                /* 0x100 */
    hf_u64 GuardEHContinuationTable;               /* 0x108 */
    hf_u64 GuardEHContinuationCount;               /* 0x110 */
    hf_u64 GuardXFGCheckFunctionPointer;           /* 0x118 */
    hf_u64 GuardXFGDispatchFunctionPointer;        /* 0x120 */
    hf_u64 GuardXFGTableDispatchFunctionPointer;   /* 0x128 */
    hf_u64 CastGuardOsDeterminedFailureMode;       /* 0x130 */
    hf_u64 GuardMemcpyFunctionPointer;             /* 0x138 */
};

_Static_assert(__builtin_offsetof(struct hf_load_config64, SecurityCookie) == 0x58, "layout");
_Static_assert(__builtin_offsetof(struct hf_load_config64, HotPatchTableOffset) == 0xF0, "layout");
_Static_assert(sizeof(struct hf_load_config64) == 0x140, "layout");

/* The /GS cookie the loader would randomise (the samples build with
 * -fno-stack-protector, so nothing reads it; real images always have one). */
hf_u64 __security_cookie = 0x00002B992DDFA232ull;

const struct hf_load_config64 _load_config_used = {
    .Size = sizeof(struct hf_load_config64),
    .SecurityCookie = &__security_cookie,
    .HotPatchTableOffset = 0,
};
