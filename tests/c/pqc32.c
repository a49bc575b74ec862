/*
 * A PKCS#11 v3.2 client for the post-quantum tests (tests/mechanisms.rs compiles it with cc):
 * it takes the module's "PKCS 11" 3.2 interface from C_GetInterface and signs with
 * CKM_ML_DSA / CKM_SLH_DSA / CKM_HSS, each through the CK_FUNCTION_LIST_3_2 it got.
 *
 * The types are declared here from the OASIS PKCS#11 3.2 headers (pkcs11t.h, pkcs11f.h), so no
 * system header of another version is needed: CK_FUNCTION_LIST_3_2 is a CK_VERSION followed by
 * the 68 functions of v2.40, the 24 v3.0 adds and the 12 v3.2 adds, in the order of pkcs11f.h.
 *
 * Usage: pqc32 MODULE OUTDIR COMMAND...
 *   sign:LABEL:MECH[:CONTEXT]   sign "pqc32 message" (size query, then the signature), write
 *                               OUTDIR/LABEL.sig, print "LABEL SIZE"
 *   exhaust:LABEL              sign with CKM_HSS until it fails, print "exhausted N 0xRV"
 *   deterministic:LABEL        C_SignInit with CKH_DETERMINISTIC_REQUIRED, print "deterministic 0xRV"
 *   verify-signature           call C_VerifySignature, print "verify-signature 0xRV"
 * MECH is ML_DSA, SLH_DSA or HSS; CONTEXT is ASCII. Exit status 0 unless a call that should
 * succeed fails.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef unsigned char CK_BYTE;
typedef struct { CK_BYTE major, minor; } CK_VERSION;
typedef struct { CK_BYTE *pInterfaceName; void *pFunctionList; CK_ULONG flags; } CK_INTERFACE;
typedef struct { CK_ULONG type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;
typedef struct { CK_ULONG mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;
typedef struct { CK_ULONG hedgeVariant; CK_BYTE *pContext; CK_ULONG ulContextLen; } CK_SIGN_ADDITIONAL_CONTEXT;
typedef struct { CK_VERSION version; void *f[68 + 24 + 12]; } CK_FUNCTION_LIST_3_2;

#define CKM_ML_DSA 0x1dUL
#define CKM_SLH_DSA 0x2eUL
#define CKM_HSS 0x4033UL
#define CKH_DETERMINISTIC_REQUIRED 2UL
#define CKA_CLASS 0UL
#define CKA_LABEL 3UL
#define CKO_PRIVATE_KEY 3UL
#define CKF_SERIAL_SESSION 4UL

/* Positions in CK_FUNCTION_LIST_3_2 (pkcs11f.h order). */
enum { I_Initialize = 0, I_Finalize = 1, I_OpenSession = 12, I_FindObjectsInit = 26,
       I_FindObjects = 27, I_FindObjectsFinal = 28, I_SignInit = 42, I_Sign = 43,
       I_VerifySignature = 95 };

typedef CK_RV (*GetInterface)(CK_BYTE *, CK_VERSION *, CK_INTERFACE **, CK_ULONG);
typedef CK_RV (*Initialize)(void *);
typedef CK_RV (*Finalize)(void *);
typedef CK_RV (*OpenSession)(CK_ULONG, CK_ULONG, void *, void *, CK_ULONG *);
typedef CK_RV (*FindObjectsInit)(CK_ULONG, CK_ATTRIBUTE *, CK_ULONG);
typedef CK_RV (*FindObjects)(CK_ULONG, CK_ULONG *, CK_ULONG, CK_ULONG *);
typedef CK_RV (*FindObjectsFinal)(CK_ULONG);
typedef CK_RV (*SignInit)(CK_ULONG, CK_MECHANISM *, CK_ULONG);
typedef CK_RV (*Sign)(CK_ULONG, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
typedef CK_RV (*VerifySignature)(CK_ULONG, CK_BYTE *, CK_ULONG);

static CK_FUNCTION_LIST_3_2 *fl;
static CK_ULONG session;
static CK_BYTE message[] = "pqc32 message";

#define CALL(type, index) ((type)fl->f[index])

static void fail(const char *what, CK_RV rv) {
    fprintf(stderr, "%s failed: 0x%lx\n", what, rv);
    exit(1);
}

static CK_ULONG find_private_key(const char *label) {
    CK_ULONG class = CKO_PRIVATE_KEY, key = 0, n = 0;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &class, sizeof class}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_RV rv = CALL(FindObjectsInit, I_FindObjectsInit)(session, t, 2);
    if (rv) fail("C_FindObjectsInit", rv);
    rv = CALL(FindObjects, I_FindObjects)(session, &key, 1, &n);
    if (rv || n != 1) fail("C_FindObjects", rv ? rv : 0xffff);
    CALL(FindObjectsFinal, I_FindObjectsFinal)(session);
    return key;
}

static CK_ULONG mechanism_of(const char *name) {
    if (!strcmp(name, "ML_DSA")) return CKM_ML_DSA;
    if (!strcmp(name, "SLH_DSA")) return CKM_SLH_DSA;
    if (!strcmp(name, "HSS")) return CKM_HSS;
    fprintf(stderr, "unknown mechanism %s\n", name);
    exit(2);
}

/* One signature: size query, then the signature into a buffer of exactly that size. */
static CK_RV sign_once(CK_ULONG key, CK_MECHANISM *m, CK_BYTE **sig, CK_ULONG *len) {
    CK_RV rv = CALL(SignInit, I_SignInit)(session, m, key);
    if (rv) return rv;
    *len = 0;
    rv = CALL(Sign, I_Sign)(session, message, sizeof message - 1, NULL, len);
    if (rv) return rv;
    *sig = malloc(*len);
    return CALL(Sign, I_Sign)(session, message, sizeof message - 1, *sig, len);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    GetInterface gi = (GetInterface)dlsym(lib, "C_GetInterface");
    CK_VERSION want = {3, 2};
    CK_INTERFACE *iface = NULL;
    CK_RV rv = gi((CK_BYTE *)"PKCS 11", &want, &iface, 0);
    if (rv) fail("C_GetInterface(\"PKCS 11\", 3.2)", rv);
    fl = iface->pFunctionList;
    printf("interface %s %d.%d\n", iface->pInterfaceName, fl->version.major, fl->version.minor);
    if (fl->version.major != 3 || fl->version.minor != 2) fail("version", 0);
    if ((rv = CALL(Initialize, I_Initialize)(NULL))) fail("C_Initialize", rv);
    if ((rv = CALL(OpenSession, I_OpenSession)(0, CKF_SERIAL_SESSION, NULL, NULL, &session)))
        fail("C_OpenSession", rv);
    for (int i = 3; i < argc; i++) {
        char *cmd = strdup(argv[i]);
        char *verb = strtok(cmd, ":"), *label = strtok(NULL, ":");
        char *mech = strtok(NULL, ":"), *context = strtok(NULL, "");
        if (!strcmp(verb, "sign")) {
            CK_SIGN_ADDITIONAL_CONTEXT p = {0, (CK_BYTE *)context, context ? strlen(context) : 0};
            CK_MECHANISM m = {mechanism_of(mech), context ? &p : NULL, context ? sizeof p : 0};
            CK_BYTE *sig = NULL;
            CK_ULONG len = 0;
            if ((rv = sign_once(find_private_key(label), &m, &sig, &len))) fail(argv[i], rv);
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.sig", argv[2], label);
            FILE *f = fopen(path, "wb");
            fwrite(sig, 1, len, f);
            fclose(f);
            printf("%s %lu\n", label, len);
        } else if (!strcmp(verb, "exhaust")) {
            CK_MECHANISM m = {CKM_HSS, NULL, 0};
            CK_ULONG key = find_private_key(label), n = 0, len;
            CK_BYTE *sig;
            while (!(rv = sign_once(key, &m, &sig, &len))) n++;
            printf("exhausted %lu 0x%lx\n", n, rv);
        } else if (!strcmp(verb, "deterministic")) {
            CK_SIGN_ADDITIONAL_CONTEXT p = {CKH_DETERMINISTIC_REQUIRED, NULL, 0};
            CK_MECHANISM m = {CKM_ML_DSA, &p, sizeof p};
            rv = CALL(SignInit, I_SignInit)(session, &m, find_private_key(label));
            printf("deterministic 0x%lx\n", rv);
        } else if (!strcmp(verb, "verify-signature")) {
            rv = CALL(VerifySignature, I_VerifySignature)(session, message, sizeof message - 1);
            printf("verify-signature 0x%lx\n", rv);
        }
        free(cmd);
    }
    CALL(Finalize, I_Finalize)(NULL);
    return 0;
}
