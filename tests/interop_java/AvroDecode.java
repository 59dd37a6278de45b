// Decodes Avro single-object encoded messages with the Apache Avro Java library, the
// reference implementation: the writer schema is found by its CRC-64-AVRO fingerprint among
// the .avsc files given, exactly as any outside consumer of our topics would do it.
//
// usage: java -cp '<avro jars>/*' AvroDecode.java <schemas dir> <message file>...
// prints one line per message: <schema full name> TAB <record as JSON>
import java.io.File;
import java.nio.file.Files;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.SchemaStore;

public class AvroDecode {
  public static void main(String[] args) throws Exception {
    SchemaStore.Cache store = new SchemaStore.Cache();
    File[] files = new File(args[0]).listFiles((dir, name) -> name.endsWith(".avsc"));
    java.util.Map<Long, Schema> byFingerprint = new java.util.HashMap<>();
    for (File f : files) {
      Schema schema = new Schema.Parser().parse(f);
      store.addSchema(schema);
      byFingerprint.put(SchemaNormalization.parsingFingerprint64(schema), schema);
    }
    for (int i = 1; i < args.length; i++) {
      byte[] bytes = Files.readAllBytes(new File(args[i]).toPath());
      long fp = java.nio.ByteBuffer.wrap(bytes, 2, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
      Schema writer = byFingerprint.get(fp);
      if (writer == null) {
        System.out.println("UNKNOWN_FINGERPRINT\t" + Long.toHexString(fp));
        continue;
      }
      BinaryMessageDecoder<GenericRecord> decoder =
          new BinaryMessageDecoder<>(GenericData.get(), writer, store);
      GenericRecord record = decoder.decode(bytes);
      System.out.println(writer.getFullName() + "\t" + record.toString());
    }
  }
}
