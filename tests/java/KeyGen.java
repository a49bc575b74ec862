// Java's KeyPairGenerator through SunPKCS11 generates key pairs with the module and signs with
// them (run by tests/keygen.rs as `java KeyGen.java <pkcs11.cfg> <outdir>`, which verifies the
// signatures with OpenSSL). SunPKCS11 asks for session key pairs (CKA_TOKEN false) with its
// default usage attributes. Writes <outdir>/java-<alg>.sig over "java" and
// <outdir>/java-<alg>.pub.der (the X.509 SubjectPublicKeyInfo Java read from the module).
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.Provider;
import java.security.Security;
import java.security.Signature;
import java.security.spec.ECGenParameterSpec;

public class KeyGen {
    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(p);
        Path out = Path.of(args[1]);
        KeyPairGenerator ec = KeyPairGenerator.getInstance("EC", p);
        ec.initialize(new ECGenParameterSpec("secp256r1"));
        run(p, out, "ec", ec.generateKeyPair(), "SHA256withECDSA");
        KeyPairGenerator rsa = KeyPairGenerator.getInstance("RSA", p);
        rsa.initialize(2048);
        run(p, out, "rsa", rsa.generateKeyPair(), "SHA256withRSA");
    }

    static void run(Provider p, Path out, String name, KeyPair kp, String alg) throws Exception {
        Signature s = Signature.getInstance(alg, p);
        s.initSign(kp.getPrivate());
        s.update("java".getBytes(StandardCharsets.UTF_8));
        Files.write(out.resolve("java-" + name + ".sig"), s.sign());
        Files.write(out.resolve("java-" + name + ".pub.der"), kp.getPublic().getEncoded());
        System.out.println("signed with a generated " + name + " key");
    }
}
