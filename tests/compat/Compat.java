// Java 17 SunPKCS11 client of the compatibility suite (run by tests/compat/run.sh as
// `java Compat.java <pkcs11.cfg> <outdir> <mode>`). It only drives the module: every signature it
// writes is verified by run.sh with the openssl CLI against the simulator's public key.
//   mode "keys":   writes aliases.txt and <alias>.pub.der (the certificate's public key)
//   mode "sign":   <alias>.<alg>.sig for java.security.Signature over data.bin
//   mode "approve": ska-ec-p256.SHA256withECDSA.sig (the simulator needs an approval meanwhile)
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PSSParameterSpec;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class Compat {
    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p);
        Path out = Path.of(args[1]);
        String mode = args[2];
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, "0000".toCharArray());
        byte[] data = Files.readAllBytes(out.resolve("data.bin"));
        switch (mode) {
            case "keys": {
                List<String> aliases = new ArrayList<>(Collections.list(ks.aliases()));
                Collections.sort(aliases);
                Files.write(out.resolve("aliases.txt"), aliases);
                for (String a : aliases) {
                    if (ks.isKeyEntry(a) && ks.getCertificate(a) != null) {
                        Files.write(out.resolve(a + ".pub.der"), ks.getCertificate(a).getPublicKey().getEncoded());
                    }
                }
                break;
            }
            case "sign":
                sign(ks, p, data, out, "ec-p256", "SHA256withECDSA", null);
                sign(ks, p, data, out, "ec-p384", "SHA384withECDSA", null);
                sign(ks, p, data, out, "rsa-2048", "SHA256withRSA", null);
                sign(ks, p, data, out, "rsa-2048", "RSASSA-PSS",
                        new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1));
                break;
            case "approve":
                sign(ks, p, data, out, "ska-ec-p256", "SHA256withECDSA", null);
                break;
            default:
                throw new IllegalArgumentException("mode " + mode);
        }
    }

    // One signature; a failure is reported on stderr and leaves no file (run.sh marks the cell).
    static void sign(KeyStore ks, Provider p, byte[] data, Path out, String alias, String alg,
                     PSSParameterSpec pss) {
        try {
            PrivateKey key = (PrivateKey) ks.getKey(alias, null);
            if (key == null) {
                throw new IllegalStateException("no key entry " + alias);
            }
            Signature s = Signature.getInstance(alg, p);
            if (pss != null) {
                s.setParameter(pss);
            }
            s.initSign(key);
            s.update(data);
            Files.write(out.resolve(alias + "." + alg + ".sig"), s.sign());
        } catch (Exception e) {
            System.err.println(alias + " " + alg + ": " + e);
        }
    }
}
